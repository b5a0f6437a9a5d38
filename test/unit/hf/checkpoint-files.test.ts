// Locating a directory's tensors: single file or shards by the index, every header and the index checked.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { locateCheckpointTensors } from '../../../shared/hf/index.js';
import { safetensorsBytes, type TestTensor, writeHfDirectory } from '../../helpers/hf-directory.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-hf-files-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const tensors: TestTensor[] = ['a', 'b', 'c', 'd'].map((name, i) => ({
  name,
  shape: [2, i + 1],
  values: Float64Array.from({ length: 2 * (i + 1) }, (_, j) => j + i),
}));
let n = 0;
const fresh = (): string => join(work, `d${n++}`);

describe('locateCheckpointTensors', () => {
  it('finds every tensor with its file, dtype, shape and absolute byte range, single or sharded', async () => {
    const single = fresh();
    writeHfDirectory(single, {}, tensors, { dtype: 'BF16' });
    const one = await locateCheckpointTensors(single);
    expect([...one.keys()]).toEqual(['a', 'b', 'c', 'd']);
    expect(one.get('c')).toMatchObject({ file: 'model.safetensors', dtype: 'BF16', shape: [2, 3] });
    expect(one.get('c')!.end - one.get('c')!.begin).toBe(12);
    const sharded = fresh();
    writeHfDirectory(sharded, {}, tensors, { shards: 2 });
    const two = await locateCheckpointTensors(sharded);
    expect(two.get('a')!.file).toBe('model-00001-of-00002.safetensors');
    expect(two.get('b')!.file).toBe('model-00002-of-00002.safetensors');
    // The range holds the tensor's own bytes: b (shape [2, 2], values 1..4) as float32 at its offset in shard 2.
    const b = two.get('b')!;
    const bytes = readFileSync(join(sharded, b.file)).subarray(b.begin, b.end);
    expect(Array.from(new Float32Array(new Uint8Array(bytes).buffer))).toEqual([1, 2, 3, 4]);
  });

  it('refuses overlapping or out-of-file byte ranges, shards outside the directory, and an index that lies', async () => {
    const overlap = fresh();
    writeHfDirectory(overlap, {}, []);
    writeFileSync(
      join(overlap, 'model.safetensors'),
      safetensorsBytes(tensors.slice(0, 2), 'F32', { b: { dtype: 'F32', shape: [2, 1], data_offsets: [4, 12] } }),
    );
    await expect(locateCheckpointTensors(overlap)).rejects.toMatchObject({
      code: 'CHECKPOINT_MISMATCH',
      message: expect.stringMatching(/overlap/),
    });
    const outside = fresh();
    writeHfDirectory(outside, {}, []);
    writeFileSync(
      join(outside, 'model.safetensors'),
      safetensorsBytes(tensors.slice(0, 1), 'F32', { z: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }),
    );
    await expect(locateCheckpointTensors(outside)).rejects.toThrow(/outside the \d+ data bytes/);
    const escape = fresh();
    writeHfDirectory(escape, {}, tensors, { shards: 2 });
    writeFileSync(join(escape, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: '../model.safetensors' } }));
    await expect(locateCheckpointTensors(escape)).rejects.toThrow(/not a file name inside the directory/);
    const lying = fresh();
    writeHfDirectory(lying, {}, tensors, { shards: 2 });
    writeFileSync(
      join(lying, 'model.safetensors.index.json'),
      JSON.stringify({
        weight_map: { a: 'model-00002-of-00002.safetensors', b: 'model-00002-of-00002.safetensors', d: 'model-00002-of-00002.safetensors' },
      }),
    );
    await expect(locateCheckpointTensors(lying)).rejects.toThrow(/the index lists tensor a here, the file does not hold it/);
    const empty = fresh();
    writeHfDirectory(empty, {}, []);
    rmSync(join(empty, 'model.safetensors'));
    await expect(locateCheckpointTensors(empty)).rejects.toMatchObject({ code: 'FILE_NOT_FOUND' });
  });
});
