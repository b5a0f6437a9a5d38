import { describe, expect, it } from 'vitest';

import {
  assembleGram,
  createSession,
  gramBands,
  instrumentGrams,
  OrtTensor,
  runSession,
  type RowRule,
} from '../../../shared/onnx/index.js';
import { relativeFrobenius } from '../../helpers/fixtures.js';
import { syntheticModel } from '../../helpers/models.js';
import { gramOf, randn, rng } from '../../helpers/random.js';

// The instrumented graph's Gram of one tapped tensor, whole or in row bands (one Split of the tensor into column
// blocks, each band its blocks' products side by side), against a float64 Gram of the unmasked rows. Split takes its
// sizes as an input from opset 13 on and as an attribute before: both spellings run.
describe.each([12, 17])('instrumented Gram bands, opset %i', (opset) => {
  it.each([
    [200, 1],
    [400, 3],
    [520, 4],
  ])('order %i (%i bands): equal the float64 Gram of the unmasked rows', async (n, bandCount) => {
    expect(gramBands(n)).toHaveLength(bandCount);
    const [batch, length] = [3, 7];
    const base = syntheticModel({
      nodes: [{ op: 'MatMul', inputs: ['x', 'w'], output: 'y' }],
      initializers: [{ name: 'w', dims: [n, 4] }],
      inputs: [
        { name: 'x', dims: ['batch', 'length', n] },
        { name: 'attention_mask', dims: ['batch', 'length'], elemType: 7 },
      ],
      outputs: ['y'],
    });
    const model = { ...base, proto: { ...base.proto, opsetImport: [{ domain: '', version: BigInt(opset) }] } };
    const rules = new Map<string, RowRule>([['x', { tensor: 'x', rows: 'tokens', mask: 'attention_mask' }]]);
    const instrumented = instrumentGrams(model, [{ id: 'g0', inputs: ['x'], inDim: n, weights: ['w'] }], rules, {
      gramOutputsOnly: true,
    });

    const x = randn(rng(n + opset), batch * length * n);
    // Each sequence padded after a different length: 7, 4 and 1 real tokens.
    const mask = BigInt64Array.from({ length: batch * length }, (_, i) => (i % length < length - 3 * Math.floor(i / length) ? 1n : 0n));
    const session = await createSession(instrumented.model);
    let out;
    try {
      out = await runSession(
        session,
        {
          x: new OrtTensor('float32', Float32Array.from(x), [batch, length, n]),
          attention_mask: new OrtTensor('int64', mask, [batch, length]),
        },
        'bands',
      );
    } finally {
      await session.release();
    }
    const names = instrumented.outputs[0]!;
    expect(names.blocks).toHaveLength(bandCount);
    const kept = [...mask.keys()].filter((r) => mask[r] === 1n);
    const rows = new Float64Array(kept.length * n);
    kept.forEach((r, i) => rows.set(Float32Array.from(x.subarray(r * n, (r + 1) * n)), i * n));
    const got = assembleGram(names, (output) => out[output]!.data as Float32Array);
    // float32 products of 12 rows summed by onnxruntime: 1e-6 relative.
    expect(relativeFrobenius(got, gramOf(rows, kept.length, n))).toBeLessThanOrEqual(1e-6);
    expect(Number((out[names.rows]!.data as BigInt64Array)[0])).toBe(kept.length);
  });
});
