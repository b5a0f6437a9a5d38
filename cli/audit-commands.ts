import { readFile } from 'node:fs/promises';

import { ErrorCode, fileError, formatBytes, formatTable, GramfuseError, toGramfuseError } from '../shared/index.js';
import {
  type AuditRecord,
  type OwnerReport,
  ownerReport,
  type Reconciliation,
  reconcileLedgers,
  verifyLedger,
  verifyLedgerText,
} from '../shared/audit/index.js';
import { AuditPublisher, type NatsTarget, natsUrl, readAuditStream } from '../shared/nats/index.js';

async function trustedKeys(paths: readonly string[] | undefined): Promise<string[] | undefined> {
  if (paths === undefined || paths.length === 0) return undefined;
  const out: string[] = [];
  for (const path of paths) {
    try {
      out.push(await readFile(path, 'utf8'));
    } catch (error) {
      throw fileError(error, path, 'reading a trusted public key');
    }
  }
  return out;
}

/** `gramfuse audit verify`: chain and signatures, offline. */
export async function auditVerify(ledger: string, keys?: readonly string[]): Promise<string> {
  const { records, trustedKeyIds } = await verifyLedger(ledger, await trustedKeys(keys));
  const writers = [...new Set(records.map((r) => r.actor))].join(', ');
  const trust =
    keys === undefined
      ? `trusted key ${trustedKeyIds.join(', ') || '-'} (introduced by its first record: compare it with the writer's key out of band, or pass --keys)`
      : `signed by the given key(s) ${trustedKeyIds.join(', ')}`;
  return `${ledger}: ${records.length} records from ${writers}; chain and signatures verify; ${trust}`;
}

/** `gramfuse audit verify --nats URL`: every writer's records in GRAMFUSE_AUDIT, checked exactly as a file is. */
export async function auditVerifyStream(target: NatsTarget, keys?: readonly string[]): Promise<string> {
  const url = natsUrl(target);
  const skipped: string[] = [];
  const ledgers = await readAuditStream(target, undefined, (problem) => skipped.push(`skipped: ${problem.toLine()}`));
  if (ledgers.length === 0) return [`${url} GRAMFUSE_AUDIT: no records`, ...skipped].join('\n');
  const trusted = await trustedKeys(keys);
  const lines: string[] = [];
  for (const ledger of ledgers) {
    const { records } = verifyLedgerText(ledger.text, `${url} GRAMFUSE_AUDIT writer ${ledger.writer}`, trusted);
    const actors = [...new Set(records.map((r) => r.actor))].join(', ');
    lines.push(
      `${url} GRAMFUSE_AUDIT writer ${ledger.writer} (${actors}): ${records.length} records, jobs ${ledger.jobs.join(', ') || '-'}; chain and signatures verify`,
    );
  }
  return [...lines, ...skipped].join('\n');
}

/** `gramfuse audit publish`: the ledger's backlog to GRAMFUSE_AUDIT; nothing already there is sent twice. */
export async function auditPublish(ledger: string, target: NatsTarget, timeoutSeconds: number): Promise<string> {
  const url = natsUrl(target);
  const { records } = await verifyLedger(ledger); // publish only what verifies
  let why = '';
  const publisher = await AuditPublisher.start({ path: ledger }, target, 'gramfuse audit publish', (line) => (why = line));
  try {
    const left = await publisher.flush(timeoutSeconds * 1000);
    if (left > 0)
      throw new GramfuseError(
        ErrorCode.Unavailable,
        `${ledger}: ${left} record(s) could not be published to ${url} in ${timeoutSeconds} s${why === '' ? '' : ` (${why})`}; run again later`,
      );
  } finally {
    await publisher.close();
  }
  // The local progress marker is not proof: ask the stream which of this ledger's records it holds.
  let onStream: Awaited<ReturnType<typeof readAuditStream>>;
  try {
    onStream = await readAuditStream(target);
  } catch (error) {
    throw new GramfuseError(
      ErrorCode.Unavailable,
      `${ledger}: cannot read stream GRAMFUSE_AUDIT on ${url} to confirm the records are there (${toGramfuseError(error).message}); run again when NATS is reachable`,
      { facts: { url } },
    );
  }
  const held = new Set(onStream.flatMap((l) => l.text.split('\n').filter((x) => x !== '')));
  const text = await readFile(ledger, 'utf8');
  const missing = text
    .split('\n')
    .filter((l) => l !== '')
    .map((line, i) => ({ line, seq: i + 1 }))
    .filter(({ line }) => !held.has(line));
  if (missing.length > 0) {
    const seqs = missing
      .slice(0, 10)
      .map((m) => m.seq)
      .join(', ');
    throw new GramfuseError(
      ErrorCode.Unavailable,
      `${ledger}: ${missing.length} of ${records.length} records are not in stream GRAMFUSE_AUDIT on ${url} (seq ${seqs}${missing.length > 10 ? ', …' : ''}); run audit publish again`,
      { facts: { url, missing: missing.length } },
    );
  }
  return `${ledger}: all ${records.length} records are in stream GRAMFUSE_AUDIT on ${url} (checked against the stream, record by record)`;
}

/**
 * `gramfuse audit reconcile`: both ledgers verify, and every receipt the agent holds matches a statistic the
 * coordinator committed and one the owner approved (shared/audit reconcileLedgers).
 */
export async function auditReconcile(agentLedger: string, coordinatorLedger: string, keys?: readonly string[]): Promise<Reconciliation> {
  const trusted = await trustedKeys(keys);
  const agent = (await verifyLedger(agentLedger, trusted)).records;
  const coordinator = (await verifyLedger(coordinatorLedger, trusted)).records;
  return reconcileLedgers(agent, coordinator, agentLedger, coordinatorLedger);
}

export function formatReconciliation(r: Reconciliation): string {
  const bad = r.rows.filter((x) => x.status !== 'match');
  const jobs = [...new Set(r.rows.map((x) => x.job))];
  const head = r.agree
    ? `${r.owner}: the agent's and the coordinator's ledgers agree: ${r.rows.length} statistics in ${jobs.length} job(s) (${jobs.join(', ')}), each receipt matching a committed statistic byte for byte and an approved plan`
    : `${r.owner}: the ledgers DISAGREE on ${bad.length} of ${r.rows.length} statistics`;
  if (bad.length === 0) return head;
  return `${head}\n${formatTable(
    ['job', 'statistic', 'bytes', 'agent digest', 'coordinator digest', 'status'],
    bad.map((x) => [x.job, x.statistic, x.bytes, x.agentSha256?.slice(0, 12) ?? '-', x.coordinatorSha256?.slice(0, 12) ?? '-', x.status]),
  )}`;
}

/** `gramfuse audit report --owner X`: the ledger verifies, then what left owner X (shared/audit ownerReport). */
export async function auditReport(ledger: string, owner: string, keys?: readonly string[]): Promise<OwnerReport> {
  const { records } = await verifyLedger(ledger, await trustedKeys(keys));
  return ownerReport(records, owner);
}

export function formatOwnerReport(report: OwnerReport, ledger: string): string {
  if (report.jobs.length === 0) return `${ledger}: nothing from ${report.owner} is recorded in this ledger`;
  const parts = [`What left ${report.owner}, according to ${ledger} (verified):`];
  for (const job of report.jobs) {
    const total = job.statistics.reduce((s, x) => s + x.bytes, 0);
    parts.push(
      '',
      `Job ${job.job}: ${job.statistics.length} statistics, ${formatBytes(total)}${job.securelyAggregated ? ' — securely aggregated: each left masked (fixed point in Z/2⁶⁴), only the sum over the owners was unmasked' : ''}`,
      formatTable(
        ['statistic', 'shape', 'rows', 'bytes', 'digest', 'time'],
        job.statistics.map((s) => [
          s.statistic,
          s.shape.length === 0 ? '-' : `[${s.shape.join(', ')}]`,
          s.rows ?? '-',
          s.bytes,
          `${s.sha256.slice(0, 12)}…`,
          s.time,
        ]),
      ),
      job.usedBy.length === 0
        ? 'Not used by a merged model in this ledger.'
        : `Used by merged model(s): ${job.usedBy.map((u) => `sha256 ${u.mergedModelSha256.slice(0, 16)}… (${u.time})`).join(', ')}`,
    );
  }
  return parts.join('\n');
}

export type { AuditRecord, OwnerReport, Reconciliation };
