// What verified ledgers say, read for people: the reconciliation of an agent's ledger with the coordinator's, and
// everything that left one owner (`gramfuse audit reconcile|report`, the dashboard's audit page).
import { ErrorCode, GramfuseError } from '../errors.js';
import type { AuditRecord } from './ledger.js';

export interface Reconciliation {
  readonly owner: string;
  readonly agentLedger: string;
  readonly coordinatorLedger: string;
  readonly agree: boolean;
  readonly rows: {
    job: string;
    statistic: string;
    bytes: number;
    agentSha256: string | null;
    coordinatorSha256: string | null;
    approved: boolean;
    status: 'match' | 'no coordinator record' | 'no agent receipt' | 'digest differs' | 'signature differs' | 'not in an approved plan';
  }[];
}

/**
 * Two verified ledgers' records (`gramfuse audit reconcile`, the dashboard's audit page): every receipt the agent holds matches a statistic the
 * coordinator committed (same job, owner, statistic, digest, bytes, receipt signature) and one the owner
 * approved; every statistic the coordinator committed for this owner has the agent's receipt.
 */
export function reconcileLedgers(
  agent: readonly AuditRecord[],
  coordinator: readonly AuditRecord[],
  agentLedger: string,
  coordinatorLedger: string,
): Reconciliation {
  const owners = [...new Set(agent.filter((r) => r.kind !== 'ledger.opened').map((r) => r.actor))];
  if (owners.length !== 1) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `${agentLedger}: an agent ledger has one writer; this one has ${owners.length} (${owners.join(', ') || 'none'}); pass an agent's audit.jsonl`,
    );
  }
  const owner = owners[0]!;
  const key = (job: string, statistic: string): string => `${job}\u0000${statistic}`;
  const approved = new Set<string>();
  const receipts = new Map<string, AuditRecord>();
  for (const r of agent) {
    if (r.kind === 'plan.approved')
      for (const s of (r.facts.statistics as { id: string; sha256: string | null }[] | undefined) ?? [])
        approved.add(`${key(r.job, s.id)}\u0000${s.sha256}`);
    // Secure aggregation: the masked statistics the agent sent (their digests, derived from the approved plan's) count as approved.
    if (r.kind === 'secure.masked')
      for (const s of (r.facts.statistics as { id: string; sha256: string }[] | undefined) ?? [])
        approved.add(`${key(r.job, s.id)}\u0000${s.sha256}`);
    if (r.kind === 'receipt.issued') receipts.set(key(r.job, String(r.facts.statistic)), r);
  }
  const committed = new Map<string, AuditRecord>();
  const signatures = new Map<string, string>();
  for (const r of coordinator) {
    if (r.facts.owner !== owner) continue;
    if (r.kind === 'statistic.committed') committed.set(key(r.job, String(r.facts.statistic)), r);
    if (r.kind === 'receipt.issued') signatures.set(key(r.job, String(r.facts.statistic)), String(r.facts.signature));
  }
  const rows: Reconciliation['rows'] = [];
  for (const k of new Set([...receipts.keys(), ...committed.keys()])) {
    const a = receipts.get(k);
    const c = committed.get(k);
    const [job, statistic] = k.split('\u0000') as [string, string];
    const agentSha = a === undefined ? null : String(a.facts.sha256);
    const coordinatorSha = c === undefined ? null : String(c.facts.sha256);
    const isApproved = approved.has(`${k}\u0000${agentSha ?? coordinatorSha}`);
    const status: Reconciliation['rows'][number]['status'] =
      a === undefined
        ? 'no agent receipt'
        : c === undefined
          ? 'no coordinator record'
          : agentSha !== coordinatorSha || Number(a.facts.bytes) !== Number(c.facts.bytes)
            ? 'digest differs'
            : signatures.get(k) !== a.facts.coordinatorSignature
              ? 'signature differs'
              : !isApproved
                ? 'not in an approved plan'
                : 'match';
    rows.push({
      job,
      statistic,
      bytes: Number((a ?? c)!.facts.bytes),
      agentSha256: agentSha,
      coordinatorSha256: coordinatorSha,
      approved: isApproved,
      status,
    });
  }
  rows.sort((x, y) => x.job.localeCompare(y.job) || x.statistic.localeCompare(y.statistic));
  return { owner, agentLedger, coordinatorLedger, agree: rows.length > 0 && rows.every((r) => r.status === 'match'), rows };
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
    /** The job used secure aggregation: what left the owner was masked, and only the sum was ever unmasked. */
    securelyAggregated: boolean;
  }[];
}

/** `gramfuse audit report --owner X` (on a verified ledger's records): what left owner X, when, in which job, and which merged artifacts used it. */
export function ownerReport(records: readonly AuditRecord[], owner: string): OwnerReport {
  const jobs = new Map<string, OwnerReport['jobs'][number]>();
  const jobOf = (id: string): OwnerReport['jobs'][number] => {
    let job = jobs.get(id);
    if (job === undefined) jobs.set(id, (job = { job: id, statistics: [], usedBy: [], securelyAggregated: false }));
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
    } else if ((r.kind === 'secure.round' && f.phase === 'sharing') || (r.kind === 'secure.masked' && r.actor === owner)) {
      jobOf(r.job).securelyAggregated = true;
    } else if (r.kind === 'solve.done') {
      const owners = (f.owners as { owner: string }[] | undefined) ?? [];
      if (owners.some((o) => o.owner === owner)) jobOf(r.job).usedBy.push({ mergedModelSha256: String(f.mergedModelSha256), time: r.time });
    }
  }
  return { owner, jobs: [...jobs.values()].filter((j) => j.statistics.length > 0) };
}
