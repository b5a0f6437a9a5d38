import { createHash } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { chunkMessage, ChunkMessagePool } from '../../../client/index.js';
import { federation } from '../../../proto/index.js';
import { chunkLength, readChunk } from '../../../shared/federation/index.js';
import { rng } from '../../helpers/random.js';

const made: string[] = [];
afterAll(async () => {
  for (const dir of made) await rm(dir, { recursive: true, force: true });
});

const fields = (length: number): Omit<federation.Chunk, 'data' | 'sha256'> => ({
  jobId: 'job-ü',
  statisticId: 'gram:encoder.layer.0.attention.self.query.weight',
  dtype: 'float64',
  shape: [768n, 768n],
  packing: 'full',
  index: 3,
  count: 12,
  offset: BigInt(3 * length),
});

describe('chunkMessage: a chunk encoded once, its data read into the message', () => {
  // Lengths around the varint boundaries of the data field's length (1, 2, 3 and 4 bytes) and the 4 MiB chunk.
  for (const length of [0, 1, 127, 128, 16_383, 16_384, 300_000, 2_097_151, 2_097_152, 4 * 1024 * 1024]) {
    it(`decodes, with the generated code, to the same chunk as the generated encoder's (${length} bytes)`, () => {
      const random = rng(length + 1);
      const data = Uint8Array.from({ length }, () => Math.floor(random() * 256));
      const sha256 = createHash('sha256').update(data).digest('hex');
      const wire = chunkMessage(fields(length), length);
      expect(wire.data.byteLength).toBe(length);
      wire.data.set(data);
      const message = wire.seal(sha256);
      const reference = federation.Chunk.encode({ ...fields(length), data, sha256 }).finish();
      // The same fields, data last instead of in field order: the same size.
      expect(message.byteLength).toBe(reference.byteLength);
      const decoded = federation.Chunk.decode(message);
      expect({ ...decoded, data: undefined }).toEqual({ ...fields(length), sha256, data: undefined });
      expect(Buffer.from(decoded.data).equals(Buffer.from(data))).toBe(true);
    });
  }

  it('refuses to seal with anything but a SHA-256 in hex', () => {
    const wire = chunkMessage(fields(4), 4);
    expect(() => wire.seal('abc')).toThrow(/not a SHA-256/);
    expect(() => wire.seal('G'.repeat(64))).toThrow(/not a SHA-256/);
  });

  it('readChunk fills a given buffer with the same bytes and digest it would allocate for, and refuses one of the wrong length', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'gramfuse-chunk-'));
    made.push(dir);
    const random = rng(7);
    const bytes = Uint8Array.from({ length: 10_000 }, () => Math.floor(random() * 256));
    await writeFile(join(dir, 'statistics.bin'), bytes);
    const file = await open(join(dir, 'statistics.bin'), 'r');
    try {
      // A statistic of 9 000 bytes at offset 500, in chunks of 4 096: the last chunk holds 808.
      for (const index of [0, 2]) {
        const length = chunkLength(9_000, index, 4_096);
        expect(length).toBe(index === 2 ? 808 : 4_096);
        const allocated = await readChunk(file, 500, 9_000, index, 4_096);
        const into = new Uint8Array(length);
        const filled = await readChunk(file, 500, 9_000, index, 4_096, undefined, into);
        expect(filled.data).toBe(into);
        expect(Buffer.from(into).equals(Buffer.from(bytes.subarray(500 + index * 4_096, 500 + index * 4_096 + length)))).toBe(true);
        expect(filled.sha256).toBe(allocated.sha256);
        expect(filled.sha256).toBe(createHash('sha256').update(into).digest('hex'));
      }
      await expect(readChunk(file, 500, 9_000, 2, 4_096, undefined, new Uint8Array(4_096))).rejects.toThrow(
        /holds 4096 bytes, chunk 2 has 808/,
      );
    } finally {
      await file.close();
    }
  });
});

describe('ChunkMessagePool', () => {
  it('hands its window + 1 buffers out in turn, so a buffer comes back only after `window` others, and grows one too small', () => {
    const pool = new ChunkMessagePool(2);
    const [a, b, c] = [pool.take(100), pool.take(100), pool.take(100)];
    const seen = new Set([a.buffer, b.buffer, c.buffer]);
    expect(seen.size).toBe(3);
    const again = pool.take(50);
    expect(again.buffer).toBe(a.buffer);
    expect(again.byteLength).toBe(50);
    expect(pool.take(100).buffer).toBe(b.buffer);
    const grown = pool.take(4096);
    expect(grown.byteLength).toBe(4096);
    expect(grown.buffer).not.toBe(c.buffer);
    expect(() => new ChunkMessagePool(0)).toThrow(/window 0/);
  });

  it('a message built in a pooled buffer decodes like a fresh one', () => {
    const pool = new ChunkMessagePool(1);
    for (const length of [5000, 300, 5000]) {
      const data = Uint8Array.from({ length }, (_, i) => (i * 7 + length) % 256);
      const wire = chunkMessage(fields(length), length, pool);
      wire.data.set(data);
      const decoded = federation.Chunk.decode(wire.seal(createHash('sha256').update(data).digest('hex')));
      expect(Buffer.from(decoded.data).equals(Buffer.from(data))).toBe(true);
      expect(decoded.offset).toBe(BigInt(3 * length));
    }
  });
});
