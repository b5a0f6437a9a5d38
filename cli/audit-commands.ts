import { readFile } from 'node:fs/promises';

import { fileError, formatBytes, formatTable } from '../shared/index.js';
import {
  type AuditRecord,
  type OwnerReport,
  ownerReport,
  type Reconciliation,
  reconcileLedgers,
  verifyLedger,
} from '../shared/audit/index.js';

/** The public keys in the --keys files (undefined without any: trust the keys the ledger declares). */
export async function trustedKeys(paths: readonly string[] | undefined): Promise<string[] | undefined> {
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
