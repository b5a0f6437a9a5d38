import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { FileStore, storeChunk } from '../../../coordinator/index.js';
import { ErrorCode, GramfuseError } from '../../../shared/index.js';
import type { StatisticChunk } from '../../../shared/federation/index.js';
import type { PlannedStatistic } from '../../../shared/merge/index.js';

const made: string[] = [];
afterAll(async () => {
  for (const dir of made) await rm(dir, { recursive: true, force: true });
});

const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');
const CHUNK = 1000;

/** A statistic of `bytes` bytes cut into CHUNK-byte chunks, each carrying its own SHA-256 (as an agent sends them). */
function statistic(bytes: number, seed: number): { planned: PlannedStatistic; chunks: StatisticChunk[]; data: Uint8Array } {
  const data = Uint8Array.from({ length: bytes }, (_, i) => (i * 31 + seed) % 251);
  const count = Math.ceil(bytes / CHUNK);
  const planned: PlannedStatistic = {
    id: `gram/g${seed}`,
    kind: 'gram',
    tensors: [],
    shape: [bytes / 8],
    dtype: 'float64',
    packing: 'dense',
    bytes,
    sha256: sha(data),
  };
  const chunks = Array.from({ length: count }, (_, index) => {
    const part = data.subarray(index * CHUNK, Math.min(bytes, (index + 1) * CHUNK));
    return {
      jobId: 'j',
      statisticId: planned.id,
      dtype: 'float64',
      shape: planned.shape,
      packing: 'dense',
      index,
      count,
      offset: index * CHUNK,
      data: part,
      sha256: sha(part),
    };
  });
  return { planned, chunks, data };
}

async function fresh(): Promise<FileStore> {
  const dir = await mkdtemp(join(tmpdir(), 'gramfuse-intake-'));
  made.push(dir);
  return new FileStore(dir);
}

async function refusal(work: Promise<unknown>): Promise<GramfuseError> {
  const error = await work.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(GramfuseError);
  expect((error as GramfuseError).code).toBe(ErrorCode.UploadInvalid);
  return error as GramfuseError;
}

describe('chunk intake', () => {
  it('assembles a statistic whose chunks arrive in order, and one resumed out of order, into the same bytes', async () => {
    const store = await fresh();
    const { planned, chunks, data } = statistic(4096, 1);
    const held = new Map<string, Set<number>>();
    for (const chunk of chunks.slice(0, -1)) expect(await storeChunk(store, held, 'org0', chunk, planned)).toBeUndefined();
    const file = await storeChunk(store, held, 'org0', chunks.at(-1)!, planned);
    expect(file).toBeDefined();
    expect(new Uint8Array(await readFile(store.path(...file!)))).toEqual(data);

    const other = statistic(4096, 2);
    const resumed = new Map<string, Set<number>>();
    for (const index of [2, 0, 4, 3]) await storeChunk(store, resumed, 'org0', other.chunks[index]!, other.planned);
    const assembled = await storeChunk(store, resumed, 'org0', other.chunks[1]!, other.planned);
    expect(new Uint8Array(await readFile(store.path(...assembled!)))).toEqual(other.data);
  });

  it('finds a bad chunk that continues the running digest when the statistic is whole: its chunks are discarded, a resend commits', async () => {
    const store = await fresh();
    const { planned, chunks, data } = statistic(4096, 3);
    const held = new Map<string, Set<number>>();
    // Chunk 2's bytes altered in flight; it still carries the SHA-256 of the bytes the agent read.
    const bad = { ...chunks[2]!, data: Uint8Array.from(chunks[2]!.data, (x, i) => (i === 7 ? x ^ 1 : x)) };
    for (const chunk of [chunks[0]!, chunks[1]!, bad, chunks[3]!]) await storeChunk(store, held, 'org0', chunk, planned);
    const error = await refusal(storeChunk(store, held, 'org0', chunks[4]!, planned));
    expect(error.message).toMatch(
      /^statistic gram\/g3 assembled from 5 chunks does not match its manifest digest; its chunks were discarded \(resend\)/,
    );
    expect(held.has(planned.id)).toBe(false);
    expect(await store.list(['jobs', 'j', 'owners', 'org0', 'partial'])).toEqual([]);
    for (const chunk of chunks.slice(0, -1)) await storeChunk(store, held, 'org0', chunk, planned);
    const file = await storeChunk(store, held, 'org0', chunks.at(-1)!, planned);
    expect(new Uint8Array(await readFile(store.path(...file!)))).toEqual(data);
  });

  it('stores the chunks of one statistic concurrently, begun in order: one call completes it, and a bad chunk is still found', async () => {
    const store = await fresh();
    const { planned, chunks, data } = statistic(9000, 6);
    const held = new Map<string, Set<number>>();
    // As the upload stream calls it: each call begun (its digest fed) before the one before it has written its chunk.
    const results = await Promise.all(chunks.map((chunk) => storeChunk(store, held, 'org0', chunk, planned)));
    const files = results.filter((r) => r !== undefined);
    expect(files).toHaveLength(1);
    expect(new Uint8Array(await readFile(store.path(...files[0]!)))).toEqual(data);
    expect(held.has(planned.id)).toBe(false);

    const other = statistic(9000, 7);
    const bad = { ...other.chunks[4]!, data: Uint8Array.from(other.chunks[4]!.data, (x, i) => (i === 0 ? x ^ 1 : x)) };
    const settled = await Promise.allSettled(
      other.chunks.map((chunk, index) => storeChunk(store, held, 'org0', index === 4 ? bad : chunk, other.planned)),
    );
    const failed = settled.filter((r) => r.status === 'rejected');
    expect(failed).toHaveLength(1);
    expect(((failed[0] as PromiseRejectedResult).reason as Error).message).toMatch(
      /^statistic gram\/g7 assembled from 9 chunks does not match/,
    );
    expect(settled.filter((r) => r.status === 'fulfilled' && r.value !== undefined)).toHaveLength(0);
    expect(await store.list(['jobs', 'j', 'owners', 'org0', 'partial'])).toEqual([]);
  });

  it('checks a chunk out of order (and a one-chunk statistic) on its own before storing it', async () => {
    const store = await fresh();
    const { planned, chunks } = statistic(4096, 4);
    const held = new Map<string, Set<number>>();
    await storeChunk(store, held, 'org0', chunks[0]!, planned);
    const skipped = { ...chunks[3]!, data: new Uint8Array(chunks[3]!.data.byteLength) };
    const error = await refusal(storeChunk(store, held, 'org0', skipped, planned));
    expect(error.message).toMatch(/^chunk 3 of gram\/g4 fails its SHA-256 check; it was not stored \(resend it\)/);
    expect([...held.get(planned.id)!]).toEqual([0]);
    // A chunk sent again after its acknowledgement was lost does not continue the digest either.
    const again = { ...chunks[0]!, data: new Uint8Array(chunks[0]!.data.byteLength) };
    await refusal(storeChunk(store, held, 'org0', again, planned));

    const one = statistic(800, 5);
    const wrong = { ...one.chunks[0]!, data: new Uint8Array(800) };
    expect((await refusal(storeChunk(store, new Map(), 'org0', wrong, one.planned))).message).toMatch(/fails its SHA-256 check/);
    expect(await store.list(['jobs', 'j', 'owners', 'org0', 'committed'])).toEqual([]);
  });
});
