import { createHash } from 'node:crypto';
import { open, readFile, truncate } from 'node:fs/promises';

import { z } from 'zod';

import { writeAll } from '../atomic-file.js';
import { ErrorCode, fileError, GramfuseError } from '../errors.js';
import { canonicalJson, signFields, type SigningKeys, verifyFields } from '../security/index.js';

/** What an audit record says happened (DESIGN.md §6). */
export const AuditKind = z.enum([
  'ledger.opened',
  'key.rotated',
  'job.created',
  'plan.approved',
  'statistic.committed',
  'receipt.issued',
  'solve.done',
  'result.fetched',
  'evaluation.reported',
  'job.failed',
  /** Secure aggregation (coordinator): a round closed — who advertised, shared, survived, dropped; the scales. */
  'secure.round',
  /** Secure aggregation (agent): the scales it masked with and the digests of the masked statistics it sends. */
  'secure.masked',
  /** Secure aggregation (agent): which owners' shares it revealed, of which kind. */
  'secure.revealed',
  /** Secure aggregation (coordinator): revealed shares left out because they disagree with the owner's commitment. */
  'secure.inconsistent-shares',
  /** Secure aggregation (agent): the job ended, so its private keys, seed and received shares were deleted (listed). */
  'secure.erased',
]);
export type AuditKind = z.infer<typeof AuditKind>;

const GENESIS = '0'.repeat(64);

/** One record. `prev` chains it to the previous record; `signature` is Ed25519 over the rest (canonical JSON). */
export const AuditRecord = z
  .object({
    version: z.literal(1),
    seq: z.number().int().positive(),
    prev: z
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .describe('SHA-256 of the previous record line (64 zeros for the first)'),
    time: z.string(),
    actor: z.string().min(1).describe('certificate identity of the writer'),
    kind: AuditKind,
    job: z.string(),
    facts: z.record(z.string(), z.unknown()).describe('statistic ids, shapes, bytes, rows, digests, policy values, artifact digests'),
    key: z
      .string()
      .regex(/^[0-9a-f]{16}$/)
      .describe('id of the signing key: first 16 hex digits of SHA-256 of its PEM'),
    signature: z.string(),
  })
  .strict();
export type AuditRecord = z.infer<typeof AuditRecord>;

export const keyId = (publicKeyPem: string): string => createHash('sha256').update(publicKeyPem.trim()).digest('hex').slice(0, 16);
const lineHash = (line: string): string => createHash('sha256').update(line).digest('hex');

/**
 * An append-only JSONL audit ledger: each record signed and chained to the previous one, fsynced before
 * `append` returns. A record cut short by a crash (no final newline) was never acknowledged; opening the
 * ledger for writing removes it and says so.
 */
export class FileLedger {
  private constructor(
    readonly path: string,
    private keys: SigningKeys,
    private readonly actor: string,
    private seq: number,
    private prev: string,
  ) {}

  static async open(path: string, keys: SigningKeys, actor: string, log?: (line: string) => void): Promise<FileLedger> {
    let text = '';
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw fileError(error, path, 'reading the audit ledger');
    }
    if (text !== '' && !text.endsWith('\n')) {
      const keep = text.lastIndexOf('\n') + 1;
      log?.(`audit ledger ${path}: removing a partial final record (a crash mid-write; it was never acknowledged)`);
      await truncate(path, Buffer.byteLength(text.slice(0, keep)));
      text = text.slice(0, keep);
    }
    const lines = text.split('\n').filter((l) => l !== '');
    const ledger = new FileLedger(path, keys, actor, lines.length, lines.length === 0 ? GENESIS : lineHash(lines.at(-1)!));
    if (lines.length === 0) await ledger.append('ledger.opened', '', { publicKey: keys.publicKeyPem, actor });
    return ledger;
  }

  /** Appends run one at a time: each record's seq and prev depend on the one before it. */
  private tail: Promise<unknown> = Promise.resolve();
  private readonly listeners = new Set<(record: AuditRecord, line: string) => void>();

  /** The writer's key id: the last token of its NATS subjects. */
  get keyId(): string {
    return keyId(this.keys.publicKeyPem);
  }

  /** Calls `listener` after each record is durably appended (e.g. to publish it to JetStream). */
  onAppend(listener: (record: AuditRecord, line: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Changes the signing key: a `key.rotated` record naming the new public key, signed by the current one;
   * every record after it is signed by the new key. Keep the new key's private half as private as the old.
   */
  rotateKey(next: SigningKeys): Promise<AuditRecord> {
    const done = this.tail.then(async () => {
      const [record] = await this.write([
        { kind: 'key.rotated', job: '', facts: { publicKey: next.publicKeyPem, previousKey: keyId(this.keys.publicKeyPem) } },
      ]);
      this.keys = next;
      return record!;
    });
    this.tail = done.catch(() => undefined);
    return done;
  }

  append(kind: AuditKind, job: string, facts: Record<string, unknown>): Promise<AuditRecord> {
    return this.appendAll([{ kind, job, facts }]).then((records) => records[0]!);
  }

  /** Appends several records with one write and one fsync (a group commit); all or none are acknowledged. */
  appendAll(entries: readonly { kind: AuditKind; job: string; facts: Record<string, unknown> }[]): Promise<AuditRecord[]> {
    const next = this.tail.then(() => this.write(entries));
    this.tail = next.catch(() => undefined);
    return next;
  }

  private async write(entries: readonly { kind: AuditKind; job: string; facts: Record<string, unknown> }[]): Promise<AuditRecord[]> {
    let seq = this.seq;
    let prev = this.prev;
    const records: AuditRecord[] = [];
    const lines: string[] = [];
    for (const { kind, job, facts } of entries) {
      const unsigned = {
        version: 1 as const,
        seq: seq + 1,
        prev,
        time: new Date().toISOString(),
        actor: this.actor,
        kind,
        job,
        facts,
        key: keyId(this.keys.publicKeyPem),
      };
      const record: AuditRecord = { ...unsigned, signature: signFields(unsigned, this.keys.privateKeyPem) };
      const line = canonicalJson(record);
      records.push(record);
      lines.push(line);
      seq = record.seq;
      prev = lineHash(line);
    }
    if (records.length === 0) return records;
    const handle = await open(this.path, 'a').catch((error: unknown) => {
      throw fileError(error, this.path, 'appending to the audit ledger');
    });
    let size = -1;
    try {
      size = (await handle.stat()).size;
      await writeAll(handle, lines.map((line) => `${line}\n`).join(''));
      await handle.sync();
    } catch (error) {
      // A failed write (disk full) may leave part of a record: cut it off so the next append starts clean.
      if (size >= 0) await handle.truncate(size).catch(() => undefined);
      throw fileError(error, this.path, 'appending to the audit ledger');
    } finally {
      await handle.close();
    }
    this.seq = seq;
    this.prev = prev;
    for (const [i, record] of records.entries()) for (const listener of this.listeners) listener(record, lines[i]!);
    return records;
  }
}

/**
 * A ledger's records with their exact lines, as written (no verification; `verifyLedger` checks them). A last
 * line cut short by a crash is left out: it was never acknowledged. A ledger not written yet has no records.
 */
export async function readLedgerRecords(path: string): Promise<{ record: AuditRecord; line: string }[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw fileError(error, path, 'reading the audit ledger');
  }
  return text
    .split('\n')
    .slice(0, -1)
    .filter((line) => line !== '')
    .map((line) => ({ record: AuditRecord.parse(JSON.parse(line)), line }));
}

/**
 * Verifies a ledger offline: every line a valid record in canonical form, seq 1, 2, 3…, each `prev` the hash
 * of the line before, each signature valid for its key (keys from `ledger.opened` records, or `trustedKeys`
 * only when given). Throws AUDIT_INVALID naming the first bad record.
 */
export async function verifyLedger(
  path: string,
  trustedKeys?: readonly string[],
): Promise<{ records: AuditRecord[]; trustedKeyIds: string[] }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw fileError(error, path, 'reading the audit ledger');
  }
  return verifyLedgerText(text, path, trustedKeys);
}

/** The same checks on a ledger's text (a file's content, or one writer's records read back from JetStream). */
export function verifyLedgerText(
  text: string,
  source: string,
  trustedKeys?: readonly string[],
): { records: AuditRecord[]; trustedKeyIds: string[] } {
  const invalid = (line: number, reason: string): GramfuseError =>
    new GramfuseError(ErrorCode.AuditInvalid, `${source}: record at line ${line} ${reason}; the ledger does not verify`, {
      facts: { source, line },
    });
  if (text !== '' && !text.endsWith('\n')) throw invalid(text.split('\n').length, 'is partial (no final newline: a crash mid-write)');
  const lines = text.split('\n').slice(0, -1);
  const keys = new Map<string, string>((trustedKeys ?? []).map((pem) => [keyId(pem), pem]));
  const records: AuditRecord[] = [];
  const used = new Set<string>();
  let current: string | undefined;
  let prev = GENESIS;
  for (const [i, line] of lines.entries()) {
    let record: AuditRecord;
    try {
      record = AuditRecord.parse(JSON.parse(line));
    } catch {
      throw invalid(i + 1, 'is not a valid audit record');
    }
    if (canonicalJson(record) !== line) throw invalid(i + 1, 'is not in canonical form (it was edited)');
    if (record.seq !== i + 1) throw invalid(i + 1, `has seq ${record.seq}, expected ${i + 1} (a record was deleted, inserted or moved)`);
    if (record.prev !== prev)
      throw invalid(i + 1, `(seq ${record.seq}) does not chain to the record before it (a record was changed, deleted, inserted or moved)`);
    // Without trusted keys, the ledger is not self-certifying: only its first record may introduce a key
    // (the one an auditor compares out of band), and a later key only through `key.rotated`, signed by the
    // key in force before it. Records after a rotation must be signed by the new key.
    const declared = typeof record.facts.publicKey === 'string' ? record.facts.publicKey : '';
    if (record.kind === 'ledger.opened') {
      if (record.seq !== 1) throw invalid(i + 1, `(seq ${record.seq}) opens the ledger again: only the first record may introduce a key`);
      if (trustedKeys === undefined) {
        keys.set(keyId(declared), declared);
        current = keyId(declared);
      }
    }
    const pem = keys.get(record.key);
    if (pem === undefined) throw invalid(i + 1, `(seq ${record.seq}) is signed by an unknown key ${record.key}`);
    if (trustedKeys === undefined && current !== undefined && record.key !== current)
      throw invalid(i + 1, `(seq ${record.seq}) is signed by key ${record.key}, but the key in force is ${current}`);
    const { signature, ...unsigned } = record;
    if (!verifyFields(unsigned, signature, pem))
      throw invalid(i + 1, `(seq ${record.seq}) has a signature that does not verify (its content was changed)`);
    if (record.kind === 'key.rotated') {
      if (declared === '') throw invalid(i + 1, `(seq ${record.seq}) rotates to no key (facts.publicKey missing)`);
      if (trustedKeys === undefined) {
        keys.set(keyId(declared), declared);
        current = keyId(declared);
      }
    }
    used.add(record.key);
    records.push(record);
    prev = lineHash(line);
  }
  const first = records[0];
  return { records, trustedKeyIds: trustedKeys === undefined ? (first === undefined ? [] : [first.key]) : [...used] };
}
