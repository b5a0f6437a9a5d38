// The chunk codec, defined once: how the agent cuts a statistic into chunks and what the coordinator accepts.
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';

import { ErrorCode, GramfuseError } from '../errors.js';

/** One chunk of a statistic, as both sides see it (the wire message is converted at each edge). */
export interface StatisticChunk {
  readonly jobId: string;
  readonly statisticId: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly packing: string;
  /** 0-based; chunk `index` holds bytes [offset, offset + data.byteLength) of the statistic. */
  readonly index: number;
  readonly count: number;
  readonly offset: number;
  readonly data: Uint8Array;
  /** SHA-256 of `data`, hex. */
  readonly sha256: string;
}

/** The default and largest chunk (grpc-js receives 4 MiB by default). */
export const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024;

export const sha256Hex = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** How many chunks of `chunkBytes` a statistic of `bytes` is cut into (an empty statistic is one empty chunk). */
export const chunkCount = (bytes: number, chunkBytes: number): number => Math.max(1, Math.ceil(bytes / chunkBytes));

/** How many bytes chunk `index` of a statistic of `size` bytes holds. */
export const chunkLength = (size: number, index: number, chunkBytes: number): number =>
  Math.max(0, Math.min(chunkBytes, size - index * chunkBytes));

/** Chunk `index` of a statistic's bytes: its slice, offset and digest. */
export function chunkAt(
  bytes: Uint8Array,
  index: number,
  chunkBytes: number,
): Pick<StatisticChunk, 'index' | 'count' | 'offset' | 'data' | 'sha256'> {
  const data = bytes.subarray(index * chunkBytes, Math.min(bytes.byteLength, (index + 1) * chunkBytes));
  return { index, count: chunkCount(bytes.byteLength, chunkBytes), offset: index * chunkBytes, data, sha256: sha256Hex(data) };
}

/**
 * Why a chunk cannot belong to a statistic of `plannedBytes` under a job's `maxChunkBytes` (offsets and
 * indices a remote party controls), or `undefined` when it fits. Its digest is checked separately.
 */
export function chunkBoundsProblem(
  chunk: Pick<StatisticChunk, 'index' | 'count' | 'offset' | 'data'>,
  plannedBytes: number,
  maxChunkBytes: number,
): string | undefined {
  if (!Number.isSafeInteger(chunk.offset) || chunk.offset < 0) return `offset ${chunk.offset} is not a byte offset`;
  if (chunk.count < 1 || chunk.index < 0 || chunk.index >= chunk.count) return `index ${chunk.index} of ${chunk.count} chunks`;
  if (chunk.data.byteLength > maxChunkBytes) return `${chunk.data.byteLength} bytes, more than the job's ${maxChunkBytes} per chunk`;
  if (chunk.offset + chunk.data.byteLength > plannedBytes)
    return `bytes ${chunk.offset}..${chunk.offset + chunk.data.byteLength} do not fit the statistic's ${plannedBytes} bytes`;
  return undefined;
}

/**
 * Chunk `index` of a statistic whose `size` bytes start at `begin` in an open file (a bundle's
 * statistics.safetensors): read when it is sent, so memory holds one chunk whatever the statistic's size.
 * `statisticSha256`, the statistic's digest from a verified manifest, is the digest of a chunk that is the whole
 * statistic (it is not hashed again; a file changed since would fail the coordinator's check, and nothing is stored).
 * `into`, when given, receives the bytes (exactly the chunk's length; e.g. the tail of its encoded wire message).
 */
export async function readChunk(
  file: FileHandle,
  begin: number,
  size: number,
  index: number,
  chunkBytes: number,
  statisticSha256?: string,
  into?: Uint8Array,
): Promise<Pick<StatisticChunk, 'index' | 'count' | 'offset' | 'data' | 'sha256'>> {
  const offset = index * chunkBytes;
  const length = chunkLength(size, index, chunkBytes);
  if (into !== undefined && into.byteLength !== length)
    throw new RangeError(`readChunk: the buffer holds ${into.byteLength} bytes, chunk ${index} has ${length}`);
  const data = into ?? new Uint8Array(length);
  const { bytesRead } = await file.read(data, 0, data.byteLength, begin + offset);
  if (bytesRead !== data.byteLength)
    throw new GramfuseError(
      ErrorCode.BundleInvalid,
      `statistic bytes ${begin + offset}..${begin + offset + data.byteLength} lie past the end of the bundle`,
    );
  const count = chunkCount(size, chunkBytes);
  return { index, count, offset, data, sha256: count === 1 && statisticSha256 !== undefined ? statisticSha256 : sha256Hex(data) };
}
