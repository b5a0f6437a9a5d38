// Chunk intake: a chunk is checked against its owner's manifest (dtype, shape, bounds, digest) before a byte is
// stored; chunks are written at their offsets and a statistic is taken only when its assembled bytes match the
// manifest's digest. The group commit (commit-batch.ts) then makes the verified statistics durable together.
import { createHash, type Hash } from 'node:crypto';

import { ErrorCode, GramfuseError, failpoint } from '../../shared/index.js';
import { chunkBoundsProblem, sha256Hex as sha256, type StatisticChunk, statisticFile } from '../../shared/federation/index.js';
import type { BundleManifest, PlannedStatistic } from '../../shared/merge/index.js';
import type { StatisticStore } from '../store/index.js';

/** The planned statistic a chunk belongs to, after every check that needs no disk; throws UPLOAD_INVALID naming the problem. */
export function checkChunk(
  identity: string,
  manifest: BundleManifest | undefined,
  chunk: StatisticChunk,
  maxChunkBytes: number,
): PlannedStatistic {
  if (manifest === undefined)
    throw new GramfuseError(ErrorCode.UploadInvalid, `${identity} must join job ${chunk.jobId} (send its manifest) before uploading`, {
      facts: { identity },
    });
  const planned = manifest.plan.statistics.find((s) => s.id === chunk.statisticId);
  if (planned === undefined)
    throw new GramfuseError(ErrorCode.UploadInvalid, `statistic ${chunk.statisticId} is not in ${identity}'s manifest (nor the template)`, {
      facts: { statistic: chunk.statisticId },
    });
  if (planned.dtype !== chunk.dtype || planned.shape.join(',') !== chunk.shape.join(',')) {
    throw new GramfuseError(
      ErrorCode.UploadInvalid,
      `chunk of ${chunk.statisticId}: ${chunk.dtype}[${chunk.shape.join(', ')}] disagrees with the manifest's ${planned.dtype}[${planned.shape.join(', ')}]`,
      { facts: { statistic: chunk.statisticId } },
    );
  }
  const problem = chunkBoundsProblem(chunk, planned.bytes, maxChunkBytes);
  if (problem !== undefined) {
    throw new GramfuseError(
      ErrorCode.UploadInvalid,
      `chunk ${chunk.index}/${chunk.count} of ${chunk.statisticId}: ${problem}; it was not stored`,
      { facts: { statistic: chunk.statisticId } },
    );
  }
  if (sha256(chunk.data) !== chunk.sha256) {
    throw new GramfuseError(
      ErrorCode.UploadInvalid,
      `chunk ${chunk.index} of ${chunk.statisticId} fails its SHA-256 check; it was not stored (resend it)`,
      { facts: { statistic: chunk.statisticId, index: chunk.index } },
    );
  }
  return planned;
}

/**
 * The statistic's digest so far while its chunks arrive in order from offset 0 (the usual upload), so its bytes
 * are hashed once as they arrive instead of read back and hashed again when the last one is in. Keyed by the
 * statistic's held-indices set: a statistic resumed after a restart, or chunks out of order, have none, and the
 * assembled file is hashed instead.
 */
const runningDigests = new WeakMap<Set<number>, { hash: Hash; upTo: number }>();

function followDigest(indices: Set<number>, chunk: StatisticChunk, fresh: boolean): void {
  const running = runningDigests.get(indices);
  if (fresh && chunk.offset === 0) {
    runningDigests.set(indices, { hash: createHash('sha256').update(chunk.data), upTo: chunk.data.byteLength });
  } else if (running !== undefined && running.upTo === chunk.offset) {
    running.hash.update(chunk.data);
    running.upTo += chunk.data.byteLength;
  } else {
    runningDigests.delete(indices);
  }
}

/**
 * Stores a checked chunk. Returns the committed file of the statistic once it is whole and verified (for the
 * batch to commit), or `undefined` while chunks are missing. `held`: statistic id → chunk indices held.
 */
export async function storeChunk(
  store: StatisticStore,
  held: Map<string, Set<number>>,
  identity: string,
  chunk: StatisticChunk,
  planned: PlannedStatistic,
): Promise<string[] | undefined> {
  const owner = ['jobs', chunk.jobId, 'owners', identity];
  const name = statisticFile(chunk.statisticId);
  const committedFile = [...owner, 'committed', `${name}.bin`];
  const mismatch = (): GramfuseError =>
    new GramfuseError(
      ErrorCode.UploadInvalid,
      `statistic ${chunk.statisticId} assembled from ${chunk.count} chunks does not match its manifest digest; its chunks were discarded (resend)`,
      { facts: { statistic: chunk.statisticId } },
    );
  if (chunk.count === 1) {
    // A one-chunk statistic is checked in memory (checkChunk hashed it: its digest is the statistic's) and written
    // once, without fsync: the group commit syncs it.
    if (chunk.data.byteLength !== planned.bytes || chunk.sha256 !== planned.sha256) throw mismatch();
    // In place, not atomically: recovery hashes a committed/ file without a receipt before it commits it.
    await store.writeChecked(committedFile, chunk.data);
    failpoint('chunk.written');
  } else {
    // Chunks go straight to their offsets of one file; `.held` lists the chunks written (no fsync: the
    // statistic's digest is checked when the last chunk arrives, so a torn chunk is found, not used).
    await store.writeAt([...owner, 'partial', `${name}.bin`], chunk.offset, chunk.data);
    await store.appendLines([...owner, 'partial', `${name}.held`], [String(chunk.index)], false);
    let indices = held.get(chunk.statisticId);
    if (indices === undefined) held.set(chunk.statisticId, (indices = new Set()));
    const fresh = indices.size === 0;
    indices.add(chunk.index);
    followDigest(indices, chunk, fresh);
    failpoint('chunk.written');
    if (indices.size < chunk.count) return undefined;
    const running = runningDigests.get(indices);
    const whole =
      running !== undefined && running.upTo === planned.bytes
        ? { bytes: running.upTo, sha256: running.hash.digest('hex') }
        : await store.sha256([...owner, 'partial', `${name}.bin`]);
    if (whole.bytes !== planned.bytes || whole.sha256 !== planned.sha256) {
      await store.remove([...owner, 'partial', `${name}.bin`]);
      await store.remove([...owner, 'partial', `${name}.held`]);
      held.delete(chunk.statisticId);
      throw mismatch();
    }
    await store.rename([...owner, 'partial', `${name}.bin`], committedFile);
    await store.remove([...owner, 'partial', `${name}.held`]);
    held.delete(chunk.statisticId);
  }
  return committedFile;
}
