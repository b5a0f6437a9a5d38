// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { buildFeeds, inputRoles, loadTokenizer, type TextTokenizer, type TokenizedExample } from '../../../agent/index.js';
import {
  analyzeModel,
  assembleGram,
  createSession,
  gramBands,
  type InferenceSession,
  instrumentGrams,
  loadModel,
  type ModelAnalysis,
  type OnnxModel,
  runSession,
  saveModel,
  type Tensor,
  withExtraOutputs,
} from '../../../shared/onnx/index.js';
import { fixture, fixtureModel, jsonlRows, maxAbsDiff, relativeFrobenius, TOKENIZER } from '../../helpers/fixtures.js';

const cases = [
  ['bert classic', fixtureModel('label-skew', 'org0')],
  ['bert dynamo', fixtureModel('label-skew', 'org1', 'model.dynamo.onnx')],
  ['gpt2', fixtureModel('tiny', 'gpt2-a')],
  ['t5', fixtureModel('tiny', 't5-b')],
] as const;

const work = mkdtempSync(join(tmpdir(), 'gramfuse-instrument-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

let tokenizer: TextTokenizer;
let examples: TokenizedExample[];
beforeAll(async () => {
  tokenizer = await loadTokenizer(TOKENIZER, { maxLength: 64 });
  // Real texts of very different lengths, so most rows of the batch carry padding.
  examples = jsonlRows(fixture('data', 'test', 'en.jsonl'), 9).map((row, i) =>
    tokenizer.encode(i % 3 === 0 ? row.text.slice(0, 40) : row.text),
  );
});

function feedsFor(analysis: ModelAnalysis, padTo?: number): Record<string, Tensor> {
  return buildFeeds(examples, analysis.inputs, inputRoles(analysis.inputs), tokenizer.padId, padTo);
}

async function run(model: OnnxModel, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const session: InferenceSession = await createSession(model);
  try {
    return await runSession(session, feeds, model.source);
  } finally {
    await session.release();
  }
}

/** Σ m_r x_r x_rᵀ in float64 from the raw activation, flattened to rows of `inDim`. */
function referenceGram(x: Float32Array, inDim: number, mask: ArrayLike<bigint> | null): { gram: Float64Array; rows: number } {
  const gram = new Float64Array(inDim * inDim);
  const rowCount = x.length / inDim;
  let rows = 0;
  for (let r = 0; r < rowCount; r++) {
    if (mask !== null && mask[r] === 0n) continue;
    rows++;
    const base = r * inDim;
    for (let i = 0; i < inDim; i++) {
      const xi = x[base + i]!;
      for (let j = 0; j < inDim; j++) gram[i * inDim + j] = gram[i * inDim + j]! + xi * x[base + j]!;
    }
  }
  return { gram, rows };
}

describe.each(cases)('instrumented Grams: %s', (_name, path) => {
  it('equal the float64 Gram of the raw activations, padding excluded', async () => {
    const model = await loadModel(path);
    const analysis = await analyzeModel(model);
    const instrumented = instrumentGrams(model, analysis.gramGroups, analysis.rowRules);
    const tensors = [...new Set(analysis.gramGroups.flatMap((g) => g.inputs))];
    const feeds = feedsFor(analysis);
    const out = await run(withExtraOutputs(instrumented.model, tensors), feeds);
    const mask = feeds.attention_mask!.data as BigInt64Array;
    let padded = 0;
    for (const m of mask) if (m === 0n) padded++;
    expect(padded).toBeGreaterThan(50);
    for (const [g, group] of analysis.gramGroups.entries()) {
      const names = instrumented.outputs[g]!;
      const gram = assembleGram(names, (output) => out[output]!.data as Float32Array);
      const expected = new Float64Array(group.inDim * group.inDim);
      let expectedRows = 0;
      for (const tensor of group.inputs) {
        const rule = analysis.rowRules.get(tensor)!;
        const ref = referenceGram(out[tensor]!.data as Float32Array, group.inDim, rule.rows === 'tokens' ? mask : null);
        for (let i = 0; i < expected.length; i++) expected[i]! += ref.gram[i]!;
        expectedRows += ref.rows;
      }
      expect(relativeFrobenius(gram, expected)).toBeLessThanOrEqual(1e-5);
      expect(Number((out[names.rows]!.data as BigInt64Array)[0])).toBe(expectedRows);
    }
  });

  it('do not depend on how far the batch is padded', async () => {
    const model = await loadModel(path);
    const analysis = await analyzeModel(model);
    const instrumented = instrumentGrams(model, analysis.gramGroups, analysis.rowRules);
    const tight = await run(instrumented.model, feedsFor(analysis));
    const loose = await run(instrumented.model, feedsFor(analysis, 64 + 13));
    for (const names of instrumented.outputs) {
      const [a, b] = [loose, tight].map((out) => assembleGram(names, (output) => out[output]!.data as Float32Array));
      expect(relativeFrobenius(a!, b!)).toBeLessThanOrEqual(1e-5);
      expect(loose[names.rows]!.data).toEqual(tight[names.rows]!.data);
    }
  });

  it('leave the model outputs unchanged, and a saved copy gives identical logits', async () => {
    const model = await loadModel(path);
    const analysis = await analyzeModel(model);
    const instrumented = instrumentGrams(model, analysis.gramGroups, analysis.rowRules);
    const feeds = feedsFor(analysis);
    const plain = await run(model, feeds);
    const withGrams = await run(instrumented.model, feeds);
    expect(maxAbsDiff(withGrams.logits!.data as Float32Array, plain.logits!.data as Float32Array)).toBeLessThanOrEqual(1e-5);
    const saved = join(work, 'saved.onnx');
    await saveModel(model, saved);
    const reloaded = await run(await loadModel(saved), feeds);
    expect(maxAbsDiff(reloaded.logits!.data as Float32Array, plain.logits!.data as Float32Array)).toBe(0);
  });
});

describe('includePadding', () => {
  it('counts every position of the padded batch, as the reference code does', async () => {
    const model = await loadModel(fixtureModel('label-skew', 'org0'));
    const analysis = await analyzeModel(model);
    const instrumented = instrumentGrams(model, analysis.gramGroups, analysis.rowRules, { includePadding: true });
    const feeds = feedsFor(analysis);
    const out = await run(instrumented.model, feeds);
    const [batch, length] = feeds.input_ids!.dims as number[];
    expect(Number((out[instrumented.outputs[0]!.rows]!.data as BigInt64Array)[0])).toBe(batch! * length!);
  });

  it('equal the float64 Gram of every row, in bands where the Gram is large (this model: n = 512 in 4 bands)', async () => {
    const model = await loadModel(fixtureModel('label-skew', 'org0'));
    const analysis = await analyzeModel(model);
    const instrumented = instrumentGrams(model, analysis.gramGroups, analysis.rowRules, { includePadding: true });
    const tensors = [...new Set(analysis.gramGroups.flatMap((g) => g.inputs))];
    const out = await run(withExtraOutputs(instrumented.model, tensors), feedsFor(analysis));
    expect(instrumented.outputs.some((o) => o.blocks.length > 1)).toBe(true);
    for (const [g, group] of analysis.gramGroups.entries()) {
      const names = instrumented.outputs[g]!;
      expect(names.blocks.map((b) => b.height)).toEqual(gramBands(group.inDim).map((b) => b.height));
      const expected = new Float64Array(group.inDim * group.inDim);
      for (const tensor of group.inputs) {
        const ref = referenceGram(out[tensor]!.data as Float32Array, group.inDim, null);
        for (let i = 0; i < expected.length; i++) expected[i]! += ref.gram[i]!;
      }
      expect(
        relativeFrobenius(
          assembleGram(names, (output) => out[output]!.data as Float32Array),
          expected,
        ),
      ).toBeLessThanOrEqual(1e-5);
    }
  });
});

describe('gramBands', () => {
  it('cover 0 … n − 1 once, one band below n = 256, at most 16', () => {
    for (const n of [1, 128, 255, 256, 300, 512, 768, 1000, 3072, 14336]) {
      const bands = gramBands(n);
      expect(bands[0]!.firstRow).toBe(0);
      for (let i = 1; i < bands.length; i++) expect(bands[i]!.firstRow).toBe(bands[i - 1]!.firstRow + bands[i - 1]!.height);
      expect(bands.at(-1)!.firstRow + bands.at(-1)!.height).toBe(n);
      expect(bands.length).toBe(n < 256 ? 1 : Math.min(16, Math.floor(n / 128)));
    }
  });
});

describe.each([...cases, ['llama', fixtureModel('tiny', 'llama-a')], ['qwen2', fixtureModel('tiny', 'qwen2-a')]] as const)(
  'gramOutputsOnly: %s',
  (_name, path) => {
    it('keeps only the Gram outputs and the nodes they need, with the same Grams', async () => {
      const model = await loadModel(path);
      const analysis = await analyzeModel(model);
      const full = instrumentGrams(model, analysis.gramGroups, analysis.rowRules);
      const pruned = instrumentGrams(model, analysis.gramGroups, analysis.rowRules, { gramOutputsOnly: true });
      const graph = pruned.model.proto.graph!;
      expect(graph.output.map((o) => o.name)).toEqual(pruned.outputs.flatMap((o) => [...o.blocks.map((b) => b.output), o.rows]));
      expect(graph.node.length).toBeLessThan(full.model.proto.graph!.node.length);
      // Everything kept is read by something kept, or is an output.
      const read = new Set([...graph.node.flatMap((n) => n.input), ...graph.output.map((o) => o.name)]);
      for (const node of graph.node) expect(node.output.some((o) => read.has(o))).toBe(true);
      const feeds = feedsFor(analysis);
      const [a, b] = [await run(full.model, feeds), await run(pruned.model, feeds)];
      for (const names of pruned.outputs) {
        const [gb, ga] = [b, a].map((out) => assembleGram(names, (output) => out[output]!.data as Float32Array));
        expect(relativeFrobenius(gb!, ga!)).toBeLessThanOrEqual(1e-6);
        expect(b[names.rows]!.data).toEqual(a[names.rows]!.data);
      }
    });
  },
);
