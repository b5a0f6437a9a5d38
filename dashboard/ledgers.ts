// The ledgers the auditor holds (files named with --ledger) and, with --nats, every writer's records in
// GRAMFUSE_AUDIT: each read and verified again on every page view (a ledger can change between two views), with
// the first broken record when one does not verify.
import { readFile } from 'node:fs/promises';

import { type AuditRecord, verifyLedgerText } from '../shared/audit/index.js';
import { type GramfuseError, toGramfuseError } from '../shared/index.js';
import { type NatsTarget, readAuditStream } from '../shared/nats/index.js';

export interface LedgerView {
  /** The file's path, or `GRAMFUSE_AUDIT writer <key id>`. */
  readonly source: string;
  readonly from: 'file' | 'nats';
  readonly verified: boolean;
  /** The verified records (none when the ledger does not verify: a broken ledger's content is not evidence). */
  readonly records: readonly AuditRecord[];
  /** Its record lines as stored (a file's against the stream's). */
  readonly lines: readonly string[];
  /** Who wrote it: the coordinator (it commits statistics) or an agent (one owner's plans and receipts). */
  readonly role: 'coordinator' | 'agent' | 'empty' | 'unknown';
  readonly writers: readonly string[];
  /** The key id of its first record (the key an auditor compares out of band). */
  readonly keyId: string;
  /** The first record that does not verify: its line (1-based; 0 when the file could not be read) and why. */
  readonly broken?: { readonly line: number; readonly code: string; readonly message: string };
}

function view(source: string, from: LedgerView['from'], text: string): LedgerView {
  const lines = text.split('\n').filter((l) => l !== '');
  try {
    const { records, trustedKeyIds } = verifyLedgerText(text, source);
    const role: LedgerView['role'] =
      records.length <= 1
        ? 'empty'
        : records.some((r) => r.kind === 'statistic.committed' || r.kind === 'job.created')
          ? 'coordinator'
          : 'agent';
    return {
      source,
      from,
      verified: true,
      records,
      lines,
      role,
      writers: [...new Set(records.map((r) => r.actor))],
      keyId: trustedKeyIds[0] ?? '',
    };
  } catch (error) {
    const coded = toGramfuseError(error);
    const line = typeof coded.facts.line === 'number' ? coded.facts.line : 0;
    return {
      source,
      from,
      verified: false,
      records: [],
      lines,
      role: 'unknown',
      writers: [],
      keyId: '',
      broken: { line, code: coded.code, message: coded.message },
    };
  }
}

export async function readLedgerFile(path: string): Promise<LedgerView> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const coded = toGramfuseError(error);
    return {
      source: path,
      from: 'file',
      verified: false,
      records: [],
      lines: [],
      role: 'unknown',
      writers: [],
      keyId: '',
      broken: { line: 0, code: coded.code, message: `cannot read ${path}: ${coded.message}` },
    };
  }
  return view(path, 'file', text);
}

export interface LedgerSet {
  readonly ledgers: readonly LedgerView[];
  /** Why GRAMFUSE_AUDIT could not be read (NATS down, no stream), when --nats was given. */
  readonly natsError?: string;
}

export async function readLedgers(
  files: readonly string[],
  nats: NatsTarget | undefined,
  onSkipped?: (problem: GramfuseError) => void,
): Promise<LedgerSet> {
  const ledgers = await Promise.all(files.map(readLedgerFile));
  if (nats === undefined) return { ledgers };
  try {
    const stream = await readAuditStream(nats, undefined, onSkipped);
    return { ledgers: [...ledgers, ...stream.map((s) => view(`GRAMFUSE_AUDIT writer ${s.writer}`, 'nats', s.text))] };
  } catch (error) {
    return { ledgers, natsError: toGramfuseError(error).message };
  }
}

/** How much of a file ledger the stream holds: its records found, byte for byte, in the same writer's stream ledger. */
export function mirrored(file: LedgerView, all: readonly LedgerView[]): { held: number; total: number } | undefined {
  if (file.from !== 'file' || file.keyId === '') return undefined;
  const stream = all.find((l) => l.from === 'nats' && l.source.endsWith(` ${file.keyId}`));
  if (stream === undefined) return { held: 0, total: file.lines.length };
  const held = new Set(stream.lines);
  return { held: file.lines.filter((l) => held.has(l)).length, total: file.lines.length };
}
