// A job as the coordinator holds it: what is persisted (state.json), what is rebuilt in memory on restart.
import type { JobSpec, JobState, Receipt } from '../../shared/federation/index.js';
import type { JoinManifest } from '../../shared/merge/index.js';
import type { ModelAnalysis } from '../../shared/onnx/index.js';
import type { JobAccess } from '../server/auth.js';
import type { SolveGroupView } from '../solve/index.js';

export interface JobView {
  readonly spec: JobSpec;
  readonly state: JobState;
  readonly fingerprint: string;
  readonly completed: readonly string[];
  readonly quorum: number;
  readonly failure?: { readonly code: string; readonly message: string };
  readonly result?: { readonly sha256: string; readonly bytes: number };
  readonly receiptPublicKey: string;
  /** The identity that created the job (absent for jobs created before it was recorded). */
  readonly createdBy?: string;
  /** Distributed solve in progress: each Gram group's task state and worker. */
  readonly solveGroups?: readonly SolveGroupView[];
}

export interface PersistedState {
  state: JobState;
  /** The identity that created the job: it may watch and download results too. */
  createdBy?: string;
  completed: string[];
  failure?: { code: string; message: string };
  result?: { sha256: string; bytes: number };
  evaluations: { owner: string; examples: number; accuracy: number; macroF1: number; at: string }[];
}

export interface Job {
  spec: JobSpec;
  fingerprint: string;
  analysis: ModelAnalysis;
  persisted: PersistedState;
  manifests: Map<string, JoinManifest>;
  /** owner → statistic id → held chunk indices */
  held: Map<string, Map<string, Set<number>>>;
  committed: Map<string, Map<string, Receipt>>;
  uploadedBytes: number;
  /** owner → the group commit in progress (uploadState waits for it, so a resumed upload sees its result). */
  committing: Map<string, Promise<unknown>>;
}

/** A job's in-memory record: what was loaded or created, with nothing uploaded yet. The template stays on disk. */
export function newJob(spec: JobSpec, analysis: ModelAnalysis, persisted: PersistedState): Job {
  return {
    spec,
    fingerprint: analysis.fingerprint,
    analysis,
    persisted,
    manifests: new Map(),
    held: new Map(),
    committed: new Map(),
    uploadedBytes: 0,
    committing: new Map(),
  };
}

/** What `job status` shows of a job. */
export function jobView(job: Job, receiptPublicKey: string): JobView {
  return {
    spec: job.spec,
    state: job.persisted.state,
    fingerprint: job.fingerprint,
    completed: job.persisted.completed,
    quorum: job.spec.quorum ?? job.spec.participants.length,
    receiptPublicKey,
    ...(job.persisted.failure === undefined ? {} : { failure: job.persisted.failure }),
    ...(job.persisted.result === undefined ? {} : { result: job.persisted.result }),
    ...(job.persisted.createdBy === undefined ? {} : { createdBy: job.persisted.createdBy }),
  };
}

/** Who may do what on a job, for `authorize`. */
export function jobAccess(job: Job): JobAccess {
  return {
    id: job.spec.id,
    participants: job.spec.participants,
    ...(job.persisted.createdBy === undefined ? {} : { createdBy: job.persisted.createdBy }),
  };
}
