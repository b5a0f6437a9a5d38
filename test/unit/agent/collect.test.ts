import { describe, expect, it } from 'vitest';

import {
  buildFeeds,
  collectExamples,
  collectGramStatistics,
  type CollectTimings,
  inputRoles,
  loadTokenizer,
} from '../../../agent/index.js';
import { analyzeModel, createSession, gramBands, loadModel, runSession, withExtraOutputs } from '../../../shared/onnx/index.js';
import { EXAMPLE_DATA, EXAMPLE_TOKENIZER, exampleModel } from '../../helpers/examples.js';
import { relativeFrobenius } from '../../helpers/fixtures.js';

describe('collectGramStatistics', () => {
  it('sums the batches of every Gram, banded or not, as float64 Σ xxᵀ of the activations (padding left out)', async () => {
    const model = await loadModel(exampleModel('org0'));
    const analysis = await analyzeModel(model);
    const tokenizer = await loadTokenizer(EXAMPLE_TOKENIZER, { maxLength: 64 });
    const examples = await collectExamples(EXAMPLE_DATA('org0'), { maxExamples: 24 });
    // The example model has Grams computed in bands (n ≥ 256) and whole ones.
    expect(analysis.gramGroups.some((g) => gramBands(g.inDim).length > 1)).toBe(true);
    expect(analysis.gramGroups.some((g) => gramBands(g.inDim).length === 1)).toBe(true);
    const collected = await collectGramStatistics(model, analysis, tokenizer, examples, { batchSize: 5 });

    // Independently: each example alone (no padding at all), its activations dumped, summed here in float64.
    const tensors = [...new Set(analysis.gramGroups.flatMap((g) => g.inputs))];
    const session = await createSession(withExtraOutputs(model, tensors));
    const expected = new Map(analysis.gramGroups.map((g) => [g.id, { gram: new Float64Array(g.inDim * g.inDim), rows: 0 }]));
    try {
      for (const example of examples) {
        const encoded = tokenizer.encode(example.text, example.pair);
        const out = await runSession(
          session,
          buildFeeds([encoded], analysis.inputs, inputRoles(analysis.inputs), tokenizer.padId),
          'reference',
        );
        for (const group of analysis.gramGroups) {
          const acc = expected.get(group.id)!;
          const n = group.inDim;
          for (const tensor of group.inputs) {
            const x = out[tensor]!.data as Float32Array;
            for (let r = 0; r < x.length / n; r++) {
              acc.rows++;
              for (let p = 0; p < n; p++) for (let q = 0; q < n; q++) acc.gram[p * n + q]! += x[r * n + p]! * x[r * n + q]!;
            }
          }
        }
      }
    } finally {
      await session.release();
    }
    for (const group of analysis.gramGroups) {
      const got = collected.groups.get(group.id)!;
      expect(got.rows).toBe(expected.get(group.id)!.rows);
      // float32 products summed per batch in onnxruntime, then in float64: 1e-5 relative, as the instrumented graph's tests.
      expect(relativeFrobenius(got.gram, expected.get(group.id)!.gram)).toBeLessThanOrEqual(1e-5);
      // Symmetric exactly as written: the lower triangle is the mirror of the upper one.
      const n = group.inDim;
      for (let p = 0; p < n; p += 17) for (let q = p + 1; q < n; q += 13) expect(got.gram[q * n + p]).toBe(got.gram[p * n + q]);
    }
  });

  it('accounts all of its time to its phases when asked (bench/collect breaks its overhead down with them)', async () => {
    const model = await loadModel(exampleModel('org0'));
    const analysis = await analyzeModel(model);
    const tokenizer = await loadTokenizer(EXAMPLE_TOKENIZER, { maxLength: 64 });
    const examples = await collectExamples(EXAMPLE_DATA('org0'), { maxExamples: 24 });
    const timings: CollectTimings = { session: 0, inputs: 0, run: 0, accumulate: 0, mirror: 0 };
    const begun = performance.now();
    await collectGramStatistics(model, analysis, tokenizer, examples, { batchSize: 5, timings });
    const wall = performance.now() - begun;
    for (const phase of ['session', 'inputs', 'run', 'accumulate'] as const) expect(timings[phase]).toBeGreaterThan(0);
    expect(timings.mirror).toBeGreaterThanOrEqual(0);
    // The phases are consecutive laps of one clock from the call's start: together they are its whole time, less
    // the few statements before the clock starts and after the last lap.
    const sum = timings.session + timings.inputs + timings.run + timings.accumulate + timings.mirror;
    expect(sum).toBeLessThanOrEqual(wall);
    expect(sum).toBeGreaterThanOrEqual(0.95 * wall - 5);
  });
});
