// The job state machine as an explicit table (DESIGN.md §5): open → collecting → solving → done | failed. A failed
// job may be solved again (a restart with disk space, a resumed solve); a restarted coordinator re-enters
// `solving` for a job it was solving. Anything else is a bug, refused loudly.
import { ErrorCode, GramfuseError } from '../../shared/index.js';
import type { JobState } from '../../shared/federation/index.js';

export const TRANSITIONS: Readonly<Record<JobState, readonly JobState[]>> = {
  open: ['open', 'collecting', 'failed'], // open → open: the job's creation, its first state written
  collecting: ['solving', 'failed'],
  solving: ['solving', 'done', 'failed'],
  failed: ['solving', 'failed'],
  done: [],
};

/** Throws INTERNAL when the table does not allow `from` → `to`. */
export function checkTransition(job: string, from: JobState, to: JobState): void {
  if (!TRANSITIONS[from].includes(to))
    throw new GramfuseError(ErrorCode.Internal, `job ${job}: no transition from ${from} to ${to}`, { facts: { job, from, to } });
}
