// Chunk intake: a chunk is checked against its owner's manifest (dtype, shape, bounds) before a byte is stored;
// chunks are written at their offsets and a statistic is taken only when its assembled bytes match the manifest's
// digest. Each byte is hashed once: a one-chunk statistic's digest is its chunk's; a large statistic's chunks
// arriving in order feed its running digest (checked when the last one is in), and only a chunk out of that
// order (a resume, a resend) is hashed on its own against its SHA-256. The group commit (commit-batch.ts) then
// makes the verified statistics durable together.
import { createHash, type Hash } from 'node:crypto';

import { ErrorCode, GramfuseError, failpoint } from '../../shared/index.js';
import { chunkBoundsProblem, sha256Hex as sha256, type StatisticChunk, statisticFile } from '../../shared/federation/index.js';
import type { JoinManifest, PlannedStatistic } from '../../shared/merge/index.js';
import type { StatisticStore } from '../store/index.js';

/**
 * The planned statistic a chunk belongs to, after every check that needs neither disk nor hashing (storeChunk
 * checks the bytes); throws UPLOAD_INVALID naming the problem.
 */
export function checkChunk(
  identity: string,
  manifest: JoinManifest | undefined,
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
  return planned;
}

/** Throws UPLOAD_INVALID when a chunk's bytes do not hash to the SHA-256 it carries. */
function checkChunkDigest(chunk: StatisticChunk): void {
  if (sha256(chunk.data) !== chunk.sha256) {
    throw new GramfuseError(
      ErrorCode.UploadInvalid,
      `chunk ${chunk.index} of ${chunk.statisticId} fails its SHA-256 check; it was not stored (resend it)`,
      { facts: { statistic: chunk.statisticId, index: chunk.index } },
    );
  }
}

/**
 * The statistic's digest so far while its chunks arrive in order from offset 0 (the usual upload): its bytes are
 * hashed once, as they arrive, instead of each chunk on its own and the whole again when the last one is in.
 * Keyed by the statistic's held-indices set: a statistic resumed after a restart, or chunks out of order, have
 * none; their chunks are checked one by one and the assembled file is hashed instead.
 */
const runningDigests = new WeakMap<Set<number>, { hash: Hash; upTo: number }>();

/** Feeds a chunk that continues its statistic's running digest into it; false when it does not continue it. */
function followDigest(indices: Set<number>, chunk: StatisticChunk): boolean {
  const running = runningDigests.get(indices);
  if (indices.size === 0 && chunk.offset === 0) {
    runningDigests.set(indices, { hash: createHash('sha256').update(chunk.data), upTo: chunk.data.byteLength });
    return true;
  }
  if (running !== undefined && running.upTo === chunk.offset && !indices.has(chunk.index)) {
    running.hash.update(chunk.data);
    running.upTo += chunk.data.byteLength;
    return true;
  }
  runningDigests.delete(indices);
  return false;
}

/**
 * Stores a checked chunk. Returns the committed file of the statistic once it is whole and verified (for the
 * batch to commit), or `undefined` while chunks are missing. `held`: statistic id → chunk indices held.
 * Calls for chunks of one statistic may overlap (the upload stream writes one chunk while it hashes the next):
 * the digest is fed before the first await, so calls must begin in the stream's order, and a chunk must not be
 * stored again while its first copy is being stored; a chunk counts as held once written and listed, and the
 * call that completes the set checks the whole statistic.
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
    // A one-chunk statistic is checked in memory (its chunk's digest is the statistic's) and written once,
    // without fsync: the group commit syncs it.
    checkChunkDigest(chunk);
    if (chunk.data.byteLength !== planned.bytes || chunk.sha256 !== planned.sha256) throw mismatch();
    // In place, not atomically: recovery hashes a committed/ file without a receipt before it commits it.
    await store.writeChecked(committedFile, chunk.data);
    failpoint('chunk.written');
  } else {
    // Chunks go straight to their offsets of one file; `.held` lists the chunks written (no fsync: the
    // statistic's digest is checked when the last chunk arrives, so a torn chunk is found, not used). A chunk
    // that does not continue the running digest is checked on its own first (it then hashes the file at the end).
    let indices = held.get(chunk.statisticId);
    if (indices === undefined) held.set(chunk.statisticId, (indices = new Set()));
    if (!followDigest(indices, chunk)) checkChunkDigest(chunk);
    await store.writeAt([...owner, 'partial', `${name}.bin`], chunk.offset, chunk.data);
    await store.appendLines([...owner, 'partial', `${name}.held`], [String(chunk.index)], false);
    indices.add(chunk.index);
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
