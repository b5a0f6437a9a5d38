import { readFile } from 'node:fs/promises';

import { type AuditRecord, fileError, formatBytes, formatTable, verifyLedger } from '../shared/index.js';

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
  const { records } = await verifyLedger(ledger, await trustedKeys(keys));
  const writers = [...new Set(records.map((r) => r.actor))].join(', ');
  return `${ledger}: ${records.length} records from ${writers}; chain and signatures verify`;
}

export interface OwnerReport {
  readonly owner: string;
  readonly jobs: {
    readonly job: string;
    readonly statistics: {
      statistic: string;
      kind: string;
      shape: number[];
      rows: number | null;
      bytes: number;
      sha256: string;
      time: string;
    }[];
    readonly usedBy: { mergedModelSha256: string; time: string }[];
  }[];
}

/** `gramfuse audit report --owner X`: what left owner X, when, in which job, and which merged artifacts used it. */
export async function auditReport(ledger: string, owner: string, keys?: readonly string[]): Promise<OwnerReport> {
  const { records } = await verifyLedger(ledger, await trustedKeys(keys));
  const jobs = new Map<string, OwnerReport['jobs'][number]>();
  const jobOf = (id: string): OwnerReport['jobs'][number] => {
    let job = jobs.get(id);
    if (job === undefined) jobs.set(id, (job = { job: id, statistics: [], usedBy: [] }));
    return job;
  };
  // A coordinator ledger records statistic.committed per owner; an agent ledger (its writer is the owner) records receipts.
  for (const r of records) {
    const f = r.facts;
    if (r.kind === 'statistic.committed' && f.owner === owner) {
      jobOf(r.job).statistics.push({
        statistic: String(f.statistic),
        kind: String(f.kind),
        shape: f.shape as number[],
        rows: (f.rows as number | null) ?? null,
        bytes: Number(f.bytes),
        sha256: String(f.sha256),
        time: r.time,
      });
    } else if (r.kind === 'receipt.issued' && r.actor === owner) {
      jobOf(r.job).statistics.push({
        statistic: String(f.statistic),
        kind: 'receipt',
        shape: [],
        rows: null,
        bytes: Number(f.bytes),
        sha256: String(f.sha256),
        time: r.time,
      });
    } else if (r.kind === 'solve.done') {
      const owners = (f.owners as { owner: string }[] | undefined) ?? [];
      if (owners.some((o) => o.owner === owner)) jobOf(r.job).usedBy.push({ mergedModelSha256: String(f.mergedModelSha256), time: r.time });
    }
  }
  return { owner, jobs: [...jobs.values()].filter((j) => j.statistics.length > 0) };
}

export function formatOwnerReport(report: OwnerReport, ledger: string): string {
  if (report.jobs.length === 0) return `${ledger}: nothing from ${report.owner} is recorded in this ledger`;
  const parts = [`What left ${report.owner}, according to ${ledger} (verified):`];
  for (const job of report.jobs) {
    const total = job.statistics.reduce((s, x) => s + x.bytes, 0);
    parts.push(
      '',
      `Job ${job.job}: ${job.statistics.length} statistics, ${formatBytes(total)}`,
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

export type { AuditRecord };
