// A job's solve as the facade runs it: wait for a solve slot, hand the committed statistics to the executor, record
// the result in the ledger and move the job to done (or failed, with the coded reason).
import { ErrorCode, failpoint, GramfuseError, toGramfuseError } from '../../shared/index.js';
import type { Slots, SolveExecutor, SolveRequest } from '../solve/index.js';
import type { JobContext } from './context.js';
import type { Job } from './job.js';
import { SECURE_SUM_OWNER } from './secure-rounds.js';

export async function runSolve(ctx: JobContext, job: Job, executor: SolveExecutor, slots: Slots): Promise<void> {
  const jobId = job.spec.id;
  let releaseSlot = (): void => undefined;
  try {
    delete job.persisted.failure;
    await ctx.transition(jobId, 'solving');
    await slots.acquire();
    releaseSlot = () => slots.release();
    const owners = [...job.persisted.completed].sort();
    // A secure job solves from the unmasked sum alone (secure-rounds.ts), never from an owner's statistics.
    const summed = job.spec.privacy.secureAggregation ? ctx.secureSum(jobId) : undefined;
    if (job.spec.privacy.secureAggregation && summed === undefined)
      throw new GramfuseError(ErrorCode.Internal, `job ${jobId}: the secure sum is not unmasked yet; nothing to solve`);
    const request: SolveRequest = {
      stateDir: ctx.store.root,
      jobId,
      spec: job.spec.merge,
      fingerprint: job.fingerprint,
      analysis: job.analysis,
      owners:
        summed === undefined
          ? owners.map((owner) => ({ owner, statistics: job.manifests.get(owner)!.plan.statistics }))
          : [{ owner: SECURE_SUM_OWNER, statistics: summed.statistics }],
      ...(summed === undefined ? {} : { secure: { owners: summed.owners } }),
    };
    // By default in a worker thread: onnxruntime's run() blocks its thread, and gRPC must keep being served.
    const outcome = await executor.solve(request, (progress) => ctx.emit(jobId, 'solve', { ...progress }));
    failpoint('solve.finished');
    job.persisted.result = { sha256: outcome.modelSha256, bytes: outcome.modelBytes };
    await ctx.ledger.append('solve.done', jobId, {
      owners: owners.map((owner) => ({
        owner,
        statistics: [...(job.committed.get(owner)?.values() ?? [])].map((r) => ({ id: r.statisticId, sha256: r.sha256 })),
      })),
      mergedModelSha256: outcome.modelSha256,
      reportSha256: outcome.reportSha256,
      method: job.spec.merge.method,
      ...(summed === undefined
        ? {}
        : { secureAggregation: { owners: summed.owners, sum: summed.statistics.map((s) => ({ id: s.id, sha256: s.sha256 })) } }),
    });
    failpoint('solve.recorded');
    await ctx.transition(jobId, 'done');
    ctx.emit(jobId, 'result', {
      sha256: outcome.modelSha256,
      bytes: outcome.modelBytes,
      artifacts: ['merged.onnx', 'merged.safetensors', 'report.json'],
    });
    const s = outcome.seconds;
    ctx.log(
      `job ${jobId}: solved (${s.solve.toFixed(2)} s solve, ${s.average.toFixed(2)} s average, ${s.write.toFixed(2)} s write` +
        `${outcome.resumedGroups > 0 ? `, ${outcome.resumedGroups} groups resumed from disk` : ''}), merged model sha256 ${outcome.modelSha256.slice(0, 16)}…`,
    );
  } catch (error) {
    await ctx.fail(jobId, toGramfuseError(error));
  } finally {
    releaseSlot();
  }
}
