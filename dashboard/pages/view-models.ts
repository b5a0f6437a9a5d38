// What the pages show, worked out from the coordinator's answers and the ledgers the auditor holds, apart from the
// markup that shows it: plain data, no HTML. A broken ledger's records are never used (LedgerView.verified).
import type { federation } from '../../proto/index.js';
import { type AuditRecord, type OwnerReport, ownerReport, type Reconciliation, reconcileLedgers } from '../../shared/audit/index.js';
import { type LedgerSet, type LedgerView, mirrored } from '../ledgers.js';

// ---- jobs ------------------------------------------------------------------------------------------------------

export function progress(j: federation.JobStatus): string {
  const uploads = `${j.completed.length}/${j.participants.length} owners uploaded`;
  if (j.solveGroups.length === 0) return uploads;
  const committed = j.solveGroups.filter((g) => g.state === 'committed').length;
  return `${uploads}; ${committed}/${j.solveGroups.length} Gram groups solved`;
}

// ---- a job -----------------------------------------------------------------------------------------------------

export interface ReportLayer {
  readonly group: string;
  readonly inDim: number;
  readonly rhs: number;
  readonly rows: number;
  readonly jitter: number;
  readonly conditionEstimate: number;
  readonly relativeResidual: number;
  readonly solvedBy?: string;
}

/** The parts of report.json the page shows (the rest is in the file, downloadable by participants). */
export interface JobReport {
  readonly layers?: readonly ReportLayer[];
  readonly outputs?: Record<string, unknown>;
  readonly seconds?: Record<string, number>;
}

export interface StatisticRow {
  readonly statistic: string;
  readonly kind: string;
  readonly shape: readonly number[];
  readonly rows: number | null;
  readonly bytes: number;
  readonly sha256: string;
  readonly time: string;
  readonly receipt: string;
  readonly agentConfirms: boolean | null;
}

/** What one participant of a job shared, as the coordinator's verified ledgers record it. */
export interface OwnerShare {
  readonly owner: string;
  readonly rows: readonly StatisticRow[];
  readonly bytes: number;
  /** Rows whose receipt the owner's own ledger records with the same digest. */
  readonly confirmed: number;
  readonly uploaded: boolean;
}

export interface JobView {
  readonly status: federation.JobStatus;
  /** One per participant, in the job's order. */
  readonly owners: readonly OwnerShare[];
  /** The verified coordinator ledgers that record the job. */
  readonly sources: readonly string[];
  readonly secureAggregation: boolean;
  readonly mergeSpec: string;
  readonly policy: string;
  readonly layers: readonly ReportLayer[];
  /** Why there are no per-layer diagnostics, when there are none. */
  readonly reportNote: string;
  readonly artifactName: string;
  /** The job's `solve.done` and `result.fetched` records in the verified coordinator ledgers. */
  readonly artifactRecords: readonly AuditRecord[];
}

/** The verified ledgers of one role, each once: a writer's mirror on GRAMFUSE_AUDIT is skipped when its file is given too. */
function verifiedLedgers(ledgers: readonly LedgerView[], role: 'coordinator' | 'agent'): LedgerView[] {
  return ledgers.filter(
    (l) =>
      l.verified && l.role === role && !(l.from === 'nats' && ledgers.some((f) => f.from === 'file' && f.verified && f.keyId === l.keyId)),
  );
}
const coordinatorLedgers = (ledgers: readonly LedgerView[]): LedgerView[] => verifiedLedgers(ledgers, 'coordinator');

/** Per owner of the job: the statistics the coordinator's verified ledger(s) record, with their receipts. */
function ownerStatistics(job: string, ledgers: readonly LedgerView[]): { owners: Map<string, StatisticRow[]>; sources: string[] } {
  const owners = new Map<string, StatisticRow[]>();
  const sources: string[] = [];
  const agentReceipts = new Map<string, string>();
  for (const l of ledgers)
    if (l.verified && l.role === 'agent')
      for (const r of l.records)
        if (r.kind === 'receipt.issued' && r.job === job)
          agentReceipts.set(`${r.actor}\u0000${String(r.facts.statistic)}`, String(r.facts.sha256));
  for (const l of coordinatorLedgers(ledgers)) {
    if (!l.records.some((r) => r.job === job)) continue;
    sources.push(l.source);
    const receipts = new Map<string, string>();
    for (const r of l.records)
      if (r.kind === 'receipt.issued' && r.job === job)
        receipts.set(
          `${String(r.facts.owner)}\u0000${String(r.facts.statistic)}`,
          typeof r.facts.signature === 'string' ? r.facts.signature : '',
        );
    for (const r of l.records) {
      if (r.kind !== 'statistic.committed' || r.job !== job) continue;
      const f = r.facts;
      const owner = String(f.owner);
      const key = `${owner}\u0000${String(f.statistic)}`;
      const agentSha = agentReceipts.get(key);
      let rows = owners.get(owner);
      if (rows === undefined) owners.set(owner, (rows = []));
      rows.push({
        statistic: String(f.statistic),
        kind: String(f.kind),
        shape: Array.isArray(f.shape) ? (f.shape as number[]) : [],
        rows: typeof f.rows === 'number' ? f.rows : null,
        bytes: Number(f.bytes),
        sha256: String(f.sha256),
        time: r.time,
        receipt: receipts.get(key) ?? '',
        agentConfirms: agentSha === undefined ? null : agentSha === String(f.sha256),
      });
    }
  }
  return { owners, sources };
}

/** Whether the job uses secure aggregation (its privacy block; absent from coordinators that predate it). */
function secureAggregation(status: federation.JobStatus): boolean {
  try {
    return status.privacyJson !== '' && (JSON.parse(status.privacyJson) as { secureAggregation?: boolean }).secureAggregation === true;
  } catch {
    return false;
  }
}

const prettyJson = (text: string): string => {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
};

export function jobView(status: federation.JobStatus, report: JobReport | undefined, reportNote: string, set: LedgerSet): JobView {
  const { owners, sources } = ownerStatistics(status.jobId, set.ledgers);
  const artifactRecords = coordinatorLedgers(set.ledgers)
    .flatMap((l) => l.records)
    .filter((r) => r.job === status.jobId && (r.kind === 'solve.done' || r.kind === 'result.fetched'));
  const outputs = report?.outputs ?? {};
  return {
    status,
    owners: status.participants.map((p) => {
      const rows = owners.get(p) ?? [];
      return {
        owner: p,
        rows,
        bytes: rows.reduce((s, r) => s + r.bytes, 0),
        confirmed: rows.filter((r) => r.agentConfirms === true).length,
        uploaded: status.completed.includes(p),
      };
    }),
    sources,
    secureAggregation: secureAggregation(status),
    mergeSpec: prettyJson(status.mergeSpecJson),
    policy: prettyJson(status.policyJson),
    layers: report?.layers ?? [],
    reportNote,
    artifactName: typeof outputs.model === 'string' ? outputs.model : 'merged.onnx',
    artifactRecords,
  };
}

// ---- audit -----------------------------------------------------------------------------------------------------

/** One ledger as the audit page lists it, with how much of it the NATS mirror holds (file ledgers only). */
export interface LedgerRow {
  readonly ledger: LedgerView;
  readonly mirror: { held: number; total: number } | undefined;
}

/** What left one owner, from the coordinator's file ledger (else the first verified coordinator ledger, else its own). */
export interface OwnerLedgerReport {
  readonly owner: string;
  /** Undefined when no verified ledger records the owner (then nothing is shown for it). */
  readonly from?: {
    readonly source: string;
    /** Over all its jobs. */
    readonly statistics: number;
    readonly bytes: number;
    readonly jobs: readonly (OwnerReport['jobs'][number] & { readonly bytes: number })[];
  };
}

/** One agent ledger reconciled against one coordinator ledger: the result, or why it could not be. */
export type ReconciliationRow = { readonly agent: string; readonly coordinator: string } & (
  { readonly error: string } | { readonly result: Reconciliation; readonly disagreeing: Reconciliation['rows'] }
);

/** A done job's merged model digest, as the coordinator answers it, against its verified ledger(s). */
export interface LiveCheck {
  readonly job: string;
  readonly resultSha256: string;
  readonly ledger: 'unrecorded' | 'matches' | 'differs';
}

export interface AuditView {
  readonly ledgers: readonly LedgerRow[];
  readonly natsError?: string;
  readonly owners: readonly OwnerLedgerReport[];
  readonly reconciliations: readonly ReconciliationRow[];
  readonly liveChecks: readonly LiveCheck[];
}

function ownerReports(coordinators: readonly LedgerView[], agents: readonly LedgerView[]): OwnerLedgerReport[] {
  const ownerIds = new Set<string>();
  for (const c of coordinators) for (const r of c.records) if (r.kind === 'statistic.committed') ownerIds.add(String(r.facts.owner));
  for (const a of agents) for (const w of a.writers) ownerIds.add(w);
  const coordinatorFile = coordinators.find((c) => c.from === 'file') ?? coordinators[0];
  return [...ownerIds].sort().map((owner) => {
    const sourceLedger = coordinatorFile ?? agents.find((a) => a.writers.includes(owner));
    if (sourceLedger === undefined) return { owner };
    const report = ownerReport(sourceLedger.records, owner);
    const jobs = report.jobs.map((j) => ({ ...j, bytes: j.statistics.reduce((t, x) => t + x.bytes, 0) }));
    return {
      owner,
      from: {
        source: sourceLedger.source,
        statistics: report.jobs.reduce((s, j) => s + j.statistics.length, 0),
        bytes: report.jobs.reduce((s, j) => s + j.statistics.reduce((t, x) => t + x.bytes, 0), 0),
        jobs,
      },
    };
  });
}

function reconciliations(coordinators: readonly LedgerView[], agents: readonly LedgerView[]): ReconciliationRow[] {
  return coordinators.flatMap((c) =>
    agents.map((a): ReconciliationRow => {
      let result: Reconciliation;
      try {
        result = reconcileLedgers(a.records, c.records, a.source, c.source);
      } catch (error) {
        return { agent: a.source, coordinator: c.source, error: (error as Error).message };
      }
      return { agent: a.source, coordinator: c.source, result, disagreeing: result.rows.filter((r) => r.status !== 'match') };
    }),
  );
}

// The coordinator's live records against its ledger: each done job's merged model digest, as the ledger has it.
function liveChecks(jobs: readonly federation.JobStatus[], coordinators: readonly LedgerView[]): LiveCheck[] {
  return jobs
    .filter((j) => j.state === 'done')
    .map((j) => {
      const recorded: AuditRecord[] = coordinators.flatMap((c) => c.records).filter((r) => r.kind === 'solve.done' && r.job === j.jobId);
      const same = recorded.some((r) => r.facts.mergedModelSha256 === j.resultSha256);
      return { job: j.jobId, resultSha256: j.resultSha256, ledger: recorded.length === 0 ? 'unrecorded' : same ? 'matches' : 'differs' };
    });
}

export function auditView(set: LedgerSet, jobs: readonly federation.JobStatus[]): AuditView {
  const { ledgers } = set;
  const coordinators = coordinatorLedgers(ledgers);
  const agents = verifiedLedgers(ledgers, 'agent');
  return {
    ledgers: ledgers.map((l) => ({ ledger: l, mirror: mirrored(l, ledgers) })),
    ...(set.natsError === undefined ? {} : { natsError: set.natsError }),
    owners: ownerReports(coordinators, agents),
    reconciliations: reconciliations(coordinators, agents),
    liveChecks: liveChecks(jobs, coordinators),
  };
}
