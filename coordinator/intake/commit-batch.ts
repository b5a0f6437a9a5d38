// Group commit: statistics verified in one upload stream are committed together, and each commit is two
// ledger records (what was received, the receipt given for it).
import type { Receipt, ReceiptFields } from '../../shared/federation/index.js';
import type { PlannedStatistic } from '../../shared/merge/index.js';
import { signFields, type SigningKeys } from '../../shared/security/index.js';

/** The two ledger records of a commit: what was received, and the receipt given for it. */
export function commitRecords(
  job: string,
  owner: string,
  statistic: PlannedStatistic,
  receipt: Receipt,
): { kind: 'statistic.committed' | 'receipt.issued'; job: string; facts: Record<string, unknown> }[] {
  return [
    {
      kind: 'statistic.committed',
      job,
      facts: {
        owner,
        statistic: statistic.id,
        kind: statistic.kind,
        tensors: statistic.tensors,
        shape: statistic.shape,
        dtype: statistic.dtype,
        bytes: statistic.bytes,
        rows: statistic.rows ?? null,
        sha256: statistic.sha256,
      },
    },
    {
      kind: 'receipt.issued',
      job,
      facts: {
        owner,
        statistic: statistic.id,
        sha256: statistic.sha256,
        bytes: statistic.bytes,
        committedAt: receipt.committedAt,
        signature: receipt.signature,
      },
    },
  ];
}

/** Statistics verified in one upload stream and not yet committed: committed together (one fsync pass). */
export class CommitBatch {
  readonly entries: { jobId: string; statistic: PlannedStatistic; file: string[] }[] = [];
  bytes = 0;

  has(jobId: string, statisticId: string): boolean {
    return this.entries.some((e) => e.jobId === jobId && e.statistic.id === statisticId);
  }
}

/** The signed receipts of one group commit: one commit time for all, each signed with the coordinator's key. */
export function signReceipts(jobId: string, owner: string, entries: CommitBatch['entries'], keys: SigningKeys): Receipt[] {
  const committedAt = new Date().toISOString();
  return entries.map(({ statistic }) => {
    const fields: ReceiptFields = {
      jobId,
      owner,
      statisticId: statistic.id,
      sha256: statistic.sha256!,
      bytes: statistic.bytes,
      committedAt,
    };
    return { ...fields, signature: signFields({ ...fields }, keys.privateKeyPem) };
  });
}
