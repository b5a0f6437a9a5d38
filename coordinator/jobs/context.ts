// What the facade lends the pieces that act on its jobs (commit, solve run, deadlines): its store, ledger and keys,
// and the three ways a job's state changes (persist, transition, fail), each announced on the event bus.
import type { FileLedger } from '../../shared/audit/index.js';
import type { JobEvent } from '../../shared/events/index.js';
import type { JobState } from '../../shared/federation/index.js';
import type { PlannedStatistic } from '../../shared/merge/index.js';
import type { SigningKeys } from '../../shared/security/index.js';
import type { StatisticStore } from '../store/index.js';

export interface JobContext {
  readonly store: StatisticStore;
  /** The coordinator's audit ledger (state dir/audit.jsonl). */
  readonly ledger: FileLedger;
  /** The receipt signing key. */
  readonly keys: SigningKeys;
  log(line: string): void;
  /** Publishes a control-plane event; never fails the caller. */
  emit(job: string, type: JobEvent['type'], data: Record<string, unknown>): void;
  /** Writes a job's state.json. */
  persist(id: string): Promise<void>;
  /** Moves a job to `state` (checked against the lifecycle table), durably, and announces it. */
  transition(id: string, state: JobState): Promise<void>;
  /** Records the failure in the ledger and moves the job to failed; never throws. */
  fail(id: string, error: Error): Promise<void>;
  /** Starts (or joins) the job's solve. */
  solve(id: string): Promise<void>;
  /** Arms the job's collection deadline (jobs/deadline.ts). */
  scheduleDeadline(id: string): void;
  /** A secure job's owner completed its upload: its upload round may close (secure-rounds.ts). */
  secureCompleted(id: string): Promise<void>;
  /** A secure job's unmasked sums, once summed. */
  secureSum(id: string): { readonly owners: string[]; readonly statistics: PlannedStatistic[] } | undefined;
}
