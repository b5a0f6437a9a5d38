// Loading a job after a restart: its spec, state and template analysis; its owners rebuilt from disk; statistics
// verified before the stop committed; owners marked complete; its deadline set again and its solve resumed.
import { ErrorCode } from '../../shared/index.js';
import { parseJobSpec } from '../../shared/federation/index.js';
import { analyzeModel, loadModel } from '../../shared/onnx/index.js';
import type { CommitBatch } from '../intake/index.js';
import { commitEntries } from './commit.js';
import type { JobContext } from './context.js';
import { type Job, newJob, type PersistedState } from './job.js';
import { recoverOwners } from './recovery.js';

/** A job read back from the state directory, or `undefined` when its creation never finished (its files removed). */
export async function readJob(
  ctx: JobContext,
  id: string,
  ledgered: Set<string>,
): Promise<{ job: Job; recovered: Map<string, CommitBatch['entries']> } | undefined> {
  const specValue = await ctx.store.readJson(['jobs', id, 'spec.json']);
  const persisted = await ctx.store.readJson<PersistedState>(['jobs', id, 'state.json']);
  if (specValue === undefined || persisted === undefined) {
    // A crash while the job was being created: it was never acknowledged, so nobody knows it exists.
    ctx.log(`job ${id}: creation did not finish before a stop; removing its files`);
    await ctx.store.remove(['jobs', id]);
    return undefined;
  }
  const spec = parseJobSpec(specValue, `job ${id}`);
  const analysis = await analyzeModel(await loadModel(ctx.store.path('jobs', id, 'template.onnx')), { probe: false });
  const job = newJob(spec, analysis, persisted);
  return { job, recovered: await recoverOwners(ctx, job, ledgered) };
}

/** Finishes what the stop interrupted for a job already registered with the facade. */
export async function resumeJob(ctx: JobContext, job: Job, recovered: Map<string, CommitBatch['entries']>): Promise<void> {
  const id = job.spec.id;
  const persisted = job.persisted;
  for (const [owner, entries] of recovered) {
    ctx.log(`job ${id}: committing ${entries.length} statistics of ${owner} verified before the stop`);
    await commitEntries(ctx, owner, job, entries);
  }
  // An owner whose last commit landed just before a stop may not be marked complete yet.
  for (const [owner, manifest] of job.manifests) {
    if (job.committed.get(owner)?.size === manifest.plan.statistics.length && !persisted.completed.includes(owner)) {
      persisted.completed.push(owner);
      await ctx.persist(id);
    }
  }
  ctx.scheduleDeadline(id);
  ctx.log(`loaded job ${id} (${persisted.state}, ${persisted.completed.length} owners complete)`);
  const quorum = job.spec.quorum ?? job.spec.participants.length;
  // A solve that failed for lack of disk space is tried again once the coordinator restarts (with space, one hopes).
  const retry = persisted.state === 'failed' && persisted.failure?.code === ErrorCode.StorageFull && persisted.completed.length >= quorum;
  if (retry) ctx.log(`job ${id}: its solve failed for lack of disk space; trying again`);
  // A secure job's rounds (secure-rounds.ts, loaded before this) start its solve once its sum is unmasked.
  const secure = job.spec.privacy.secureAggregation;
  if (retry || persisted.state === 'solving' || (!secure && persisted.state === 'collecting' && persisted.completed.length >= quorum))
    void ctx.solve(id);
}
