// Restart recovery: what a stop left half done in one job's owners, mended. Receipts are the commit point; a
// statistic verified (or whole in partial/) but not yet committed is checked again and committed; chunks held
// are those on whole lines of `.held`; ledger records missing after a receipt are written.
import { readLedgerRecords, type FileLedger } from '../../shared/audit/index.js';
import { type Receipt, statisticFile } from '../../shared/federation/index.js';
import type { JoinManifest } from '../../shared/merge/index.js';
import { type CommitBatch, commitRecords } from '../intake/index.js';
import type { StatisticStore } from '../store/index.js';
import type { Job } from './job.js';

export interface RecoveryContext {
  readonly store: StatisticStore;
  readonly ledger: FileLedger;
  readonly log: (line: string) => void;
}

/**
 * Rebuilds a loaded job's owners (manifests, receipts, chunks held) from disk and returns, per owner, the
 * statistics verified before the stop that still need their group commit (only while the job is collecting).
 */
export async function recoverOwners(ctx: RecoveryContext, job: Job, ledgered: Set<string>): Promise<Map<string, CommitBatch['entries']>> {
  const id = job.spec.id;
  const recovered = new Map<string, CommitBatch['entries']>();
  for (const owner of await ctx.store.list(['jobs', id, 'owners'])) {
    const ownerDir = ['jobs', id, 'owners', owner];
    const manifest = await ctx.store.readJson<JoinManifest>([...ownerDir, 'manifest.json']);
    if (manifest !== undefined) job.manifests.set(owner, manifest);
    const committed = new Map<string, Receipt>();
    for (const receipt of await readReceipts(ctx, [...ownerDir, 'receipts.jsonl'])) {
      committed.set(receipt.statisticId, receipt);
      job.uploadedBytes += receipt.bytes;
      // Receipts are the commit point; the ledger records come after them. A stop in between is mended here.
      if (!ledgered.has(`${id}\u0000${owner}\u0000${receipt.statisticId}`)) {
        const statistic = manifest?.plan.statistics.find((x) => x.id === receipt.statisticId);
        if (statistic !== undefined) await ctx.ledger.appendAll(commitRecords(id, owner, statistic, receipt));
      }
    }
    job.committed.set(owner, committed);
    const held = new Map<string, Set<number>>();
    const verified: CommitBatch['entries'] = [];
    for (const s of manifest?.plan.statistics ?? []) {
      if (committed.has(s.id)) continue;
      // A statistic verified and moved into committed/ but stopped before its group commit: check it again and commit it.
      const file = [...ownerDir, 'committed', `${statisticFile(s.id)}.bin`];
      const digest = await ctx.store.sha256(file).catch(() => undefined);
      if (digest !== undefined) {
        if (digest.bytes === s.bytes && digest.sha256 === s.sha256) {
          verified.push({ jobId: id, statistic: s, file });
          continue;
        }
        await ctx.store.remove(file);
      }
      // Every chunk of it written but stopped before it was assembled: no chunk is left for the agent to send,
      // so the statistic is checked and taken here.
      const partial = [...ownerDir, 'partial', `${statisticFile(s.id)}.bin`];
      const whole = await ctx.store.sha256(partial).catch(() => undefined);
      if (whole !== undefined && whole.bytes === s.bytes && whole.sha256 === s.sha256) {
        await ctx.store.rename(partial, file);
        await ctx.store.remove([...ownerDir, 'partial', `${statisticFile(s.id)}.held`]);
        verified.push({ jobId: id, statistic: s, file });
        continue;
      }
      const text = (await ctx.store.read([...ownerDir, 'partial', `${statisticFile(s.id)}.held`]))?.toString('utf8');
      // Only whole lines count: a line cut by a crash names a chunk whose write may not have finished.
      const indices = (text ?? '').split('\n').slice(0, -1).map(Number).filter(Number.isInteger);
      if (indices.length > 0) held.set(s.id, new Set(indices));
    }
    job.held.set(owner, held);
    // Only a job still collecting takes them; a closed job's result does not change.
    if (verified.length > 0 && (job.persisted.state === 'open' || job.persisted.state === 'collecting')) recovered.set(owner, verified);
  }
  return recovered;
}

/** (job, owner, statistic) of every statistic.committed record in the coordinator's ledger. */
export async function ledgeredCommits(ledger: FileLedger): Promise<Set<string>> {
  return new Set(
    (await readLedgerRecords(ledger.path))
      .map((r) => r.record)
      .filter((r) => r.kind === 'statistic.committed')
      .map((r) => `${r.job}\u0000${String(r.facts.owner)}\u0000${String(r.facts.statistic)}`),
  );
}

/** An owner's receipt log; a last line cut short by a crash (no newline) was never a commit and is dropped. */
export async function readReceipts(ctx: RecoveryContext, parts: string[]): Promise<Receipt[]> {
  const text = (await ctx.store.read(parts))?.toString('utf8') ?? '';
  const complete = text.endsWith('\n') ? text : text.slice(0, text.lastIndexOf('\n') + 1);
  if (complete !== text) {
    ctx.log(`${parts.join('/')}: dropping a receipt line cut short by a stop`);
    await ctx.store.write(parts, complete);
  }
  return complete
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Receipt);
}
