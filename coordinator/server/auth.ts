import { ErrorCode, GramfuseError } from '../../shared/index.js';

/**
 * Every RPC's permission, decided here and nowhere else. The caller's identity is its mTLS certificate's
 * subject common name (or, in insecure loopback mode, the name it claims).
 */
export type Action =
  /** Jobs/Create: only identities the operator listed as creators. */
  | 'job.create'
  /** Jobs/Get, Jobs/Watch (and what Jobs/List shows): the job's participants, its creator and the observers. */
  | 'job.read'
  /** Uploads/Join, Uploads/State, Uploads/Upload: only the job's participants, each for itself. */
  | 'job.upload'
  /** Results/Download of the merged model: the job's participants and its creator. */
  | 'result.read'
  /** Results/Download of report.json (per-layer diagnostics, digests; no weights): as result.read, and the observers. */
  | 'report.read'
  /** Results/ReportEvaluation: only the job's participants. */
  | 'result.report'
  /** SecureAggregation/Advertise, Share, Reveal, Round: only the job's participants, each for itself. */
  | 'secure.exchange'
  /** Solves/FetchInput, Solves/Submit: only identities the operator listed as solvers (--solver-identities). */
  | 'solve.work';

/** Who may do what on a job: the facts `authorize` decides on. */
export interface JobAccess {
  readonly id: string;
  readonly participants: readonly string[];
  /** Absent for jobs created before creators were recorded. */
  readonly createdBy?: string;
}

export interface AuthorizationConfig {
  /** Identities allowed to create jobs. Empty: nobody (the coordinator then only serves jobs it already has). */
  readonly creators: readonly string[];
  /** Identities of solver workers (distributed solve). @default [] (no worker may fetch sums or submit solutions) */
  readonly solvers?: readonly string[];
  /**
   * Read-only identities (auditors, `gramfuse dashboard`): they see every job's status and its report.json, never
   * a merged model, and may change nothing. @default []
   */
  readonly observers?: readonly string[];
}

/** May `identity` see this job at all (get, watch, list)? Its participants, its creator and the observers. */
export function canSee(identity: string, job: JobAccess, config: Pick<AuthorizationConfig, 'observers'> = {}): boolean {
  return job.participants.includes(identity) || job.createdBy === identity || (config.observers ?? []).includes(identity);
}

/** Throws NOT_AUTHORIZED unless `identity` may perform `action` (on `job`, for every action but job.create). */
export function authorize(identity: string, action: Action, job: JobAccess | undefined, config: AuthorizationConfig): void {
  const deny = (message: string): never => {
    throw new GramfuseError(ErrorCode.NotAuthorized, message, {
      facts: { identity, action, ...(job === undefined ? {} : { job: job.id }) },
    });
  };
  if (action === 'job.create') {
    if (!config.creators.includes(identity))
      deny(
        config.creators.length === 0
          ? `${identity} may not create jobs: this coordinator lists no creators (start it with --creators NAME[,NAME…])`
          : `${identity} may not create jobs on this coordinator (creators: ${config.creators.join(', ')})`,
      );
    return;
  }
  if (job === undefined) throw new GramfuseError(ErrorCode.Internal, `authorize(${action}) needs the job`);
  if (action === 'solve.work') {
    const solvers = config.solvers ?? [];
    if (!solvers.includes(identity))
      deny(
        solvers.length === 0
          ? `${identity} may not work on solves: this coordinator lists no solver identities (start it with --solver-identities NAME[,NAME…])`
          : `${identity} is not a solver of this coordinator (solvers: ${solvers.join(', ')})`,
      );
    return;
  }
  const participant = job.participants.includes(identity);
  switch (action) {
    case 'job.read':
    case 'report.read':
      if (!canSee(identity, job, config))
        deny(`${identity} may not see job ${job.id}: only its participants, its creator and this coordinator's observers may`);
      return;
    case 'result.read':
      if (!canSee(identity, job))
        deny(
          `${identity} may not download job ${job.id}'s merged model: only its participants and its creator may${(config.observers ?? []).includes(identity) ? ' (an observer reads its status and report.json only)' : ''}`,
        );
      return;
    case 'job.upload':
    case 'result.report':
    case 'secure.exchange':
      if (!participant)
        deny(
          `${identity} is not a participant of job ${job.id}: only its participants may ${action === 'job.upload' ? 'upload to it' : action === 'secure.exchange' ? 'take part in its secure aggregation' : 'report evaluations of it'}`,
        );
      return;
  }
}
