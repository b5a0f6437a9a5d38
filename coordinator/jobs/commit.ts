// The group commit of one owner's verified statistics: fsync them, append their signed receipts with one fsync (the
// commit point), record them in the audit ledger, announce the progress, and start the solve at quorum.
import { failpoint } from '../../shared/index.js';
import type { Receipt } from '../../shared/federation/index.js';
import { type CommitBatch, commitRecords, signReceipts } from '../intake/index.js';
import type { JobContext } from './context.js';
import type { Job } from './job.js';

export async function commitEntries(ctx: JobContext, identity: string, job: Job, entries: CommitBatch['entries']): Promise<Receipt[]> {
  const jobId = job.spec.id;
  await ctx.store.sync(entries.map((e) => e.file));
  failpoint('commit.synced');
  const receipts = signReceipts(jobId, identity, entries, ctx.keys);
  await ctx.store.appendLines(
    ['jobs', jobId, 'owners', identity, 'receipts.jsonl'],
    receipts.map((r) => JSON.stringify(r)),
    true,
  );
  failpoint('commit.receipts');
  const committed = job.committed.get(identity)!;
  for (const receipt of receipts) {
    committed.set(receipt.statisticId, receipt);
    job.uploadedBytes += receipt.bytes;
  }
  await ctx.ledger.appendAll(entries.flatMap(({ statistic }, i) => commitRecords(jobId, identity, statistic, receipts[i]!)));
  failpoint('commit.recorded');
  const total = job.manifests.get(identity)!.plan.statistics.length;
  ctx.emit(jobId, 'upload', {
    owner: identity,
    committed: committed.size,
    total,
    bytes: [...committed.values()].reduce((sum, r) => sum + r.bytes, 0),
  });
  if (committed.size === total && !job.persisted.completed.includes(identity)) {
    job.persisted.completed.push(identity);
    const quorum = job.spec.quorum ?? job.spec.participants.length;
    ctx.log(`job ${jobId}: ${identity} complete (${job.persisted.completed.length}/${quorum})`);
    await ctx.persist(jobId);
    // A secure job solves only once its survivors' masks are removed (secure-rounds.ts), never at a quorum of uploads.
    if (job.spec.privacy.secureAggregation) void ctx.secureCompleted(jobId);
    else if (job.persisted.completed.length >= quorum && job.persisted.state === 'collecting') void ctx.solve(jobId);
  }
  return receipts;
}
