// The collection deadline: a job still collecting when `deadlines.collect` passes fails with DEADLINE_EXCEEDED,
// naming the owners that were missing.
import { ErrorCode, GramfuseError } from '../../shared/index.js';
import type { Job } from './job.js';

export function scheduleDeadline(job: Job, fail: (error: GramfuseError) => Promise<void>): void {
  const at = job.spec.deadlines.collect;
  const collecting = (): boolean => job.persisted.state === 'open' || job.persisted.state === 'collecting';
  if (at === undefined || !collecting()) return;
  const check = (): void => {
    const remaining = Date.parse(at) - Date.now();
    if (remaining > 0) {
      // setTimeout holds at most ~24.8 days; wait in steps.
      setTimeout(check, Math.min(remaining, 2 ** 31 - 1)).unref();
      return;
    }
    if (!collecting()) return;
    const missing = job.spec.participants.filter((p) => !job.persisted.completed.includes(p));
    void fail(
      new GramfuseError(
        ErrorCode.DeadlineExceeded,
        `job ${job.spec.id}: the collection deadline ${at} passed with ${job.persisted.completed.length} of ${job.spec.quorum ?? job.spec.participants.length} owners complete (missing: ${missing.join(', ')})`,
        { facts: { job: job.spec.id, deadline: at } },
      ),
    );
  };
  check();
}
