// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
// bench/synthetic-decoder.ts writes the graph an HF export of Llama/Qwen2 has: the analysis must find on it the block
// structure it finds on the real tiny exports (7 linear layers in 4 Gram groups per block), and the model must run.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { DECODER_PRESETS, syntheticDecoder, writeSyntheticDecoder } from '../../../bench/synthetic-decoder.js';
import { analyzeModel, createSession, loadModel, type ModelAnalysis, OrtTensor, runSession } from '../../../shared/onnx/index.js';
import { fixtureModel } from '../../helpers/fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-decoder-gen-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Per block: each Gram group's input width and its weights' output widths (names differ between exporters). */
function blocks(analysis: ModelAnalysis, layers: number): string[] {
  const layerOf = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
  return analysis.gramGroups
    .slice(0, 4 * layers)
    .map((g) => `${g.inDim}:${g.weights.map((w) => `${layerOf.get(w)!.outDim}${layerOf.get(w)!.bias === null ? '' : '+b'}`).join(',')}`);
}

describe.each([
  ['llama', 'tiny-llama'],
  ['qwen2', 'tiny-qwen2'],
] as const)('synthetic %s decoder', (arch, preset) => {
  const options = DECODER_PRESETS[preset];

  it('has the real export’s block structure: 7 linear layers, 4 Gram groups per block, masked token rows', async () => {
    const real = await analyzeModel(await loadModel(fixtureModel('tiny', `${arch}-a`)));
    const path = join(work, `${preset}.onnx`);
    await writeSyntheticDecoder(path, options, true);
    const synthetic = await analyzeModel(await loadModel(path));
    const layers = options.layers;
    expect(blocks(synthetic, layers)).toEqual(blocks(real, layers));
    // The generated causal LM is recognised as one; the tiny exports are sequence classifiers ([batch, 14] logits).
    expect(synthetic.task).toEqual({ kind: 'causal-lm', output: 'logits', vocab: options.vocab, embedding: 'model.embed_tokens.weight' });
    expect(real.task.kind).toBe('classifier');
    expect(synthetic.gramGroups.slice(0, 4 * layers).reduce((n, g) => n + g.weights.length, 0)).toBe(7 * layers);
    for (const group of synthetic.gramGroups)
      for (const input of group.inputs) expect(synthetic.rowRules.get(input)).toMatchObject({ rows: 'tokens', mask: 'attention_mask' });
    if (options.tied) {
      // The tied embedding is the lm_head too: averaged, and the analysis says why; no Gram group for the head.
      expect(synthetic.notes.find((n) => n.tensor === 'model.embed_tokens.weight')?.reason).toMatch(/tied parameter/);
      expect(synthetic.gramGroups).toHaveLength(4 * layers);
    } else {
      expect(synthetic.linearLayers.map((l) => l.weight)).toContain('lm_head.weight');
      expect(synthetic.gramGroups).toHaveLength(4 * layers + 1);
    }
  });

  it('runs: [batch, sequence, vocab] logits, finite, and padding does not change the real tokens’ logits', async () => {
    const model = syntheticDecoder(options);
    const session = await createSession(model);
    try {
      const ids = [5, 17, 42, 7, 99, 3];
      const feed = (tokens: number[], mask: number[]) => ({
        input_ids: new OrtTensor('int64', BigInt64Array.from(tokens.map(BigInt)), [1, tokens.length]),
        attention_mask: new OrtTensor('int64', BigInt64Array.from(mask.map(BigInt)), [1, mask.length]),
      });
      const plain = (
        await runSession(
          session,
          feed(
            ids,
            ids.map(() => 1),
          ),
          'synthetic',
        )
      ).logits!;
      expect(plain.dims).toEqual([1, ids.length, options.vocab]);
      const values = plain.data as Float32Array;
      expect(values.every((v) => Number.isFinite(v))).toBe(true);
      // Right padding: the causal mask keeps real tokens from seeing the pads.
      const padded = (await runSession(session, feed([...ids, 0, 0], [...ids.map(() => 1), 0, 0]), 'synthetic')).logits!;
      const p = padded.data as Float32Array;
      let worst = 0;
      for (let i = 0; i < values.length; i++) worst = Math.max(worst, Math.abs(values[i]! - p[i]!));
      expect(worst).toBeLessThanOrEqual(1e-4);
    } finally {
      await session.release();
    }
  });
});

describe('decoder presets', () => {
  it('carry the sizes of the models they stand for', () => {
    expect(DECODER_PRESETS['qwen2-0.5b']).toMatchObject({
      hidden: 896,
      layers: 24,
      heads: 14,
      kvHeads: 2,
      ffn: 4864,
      vocab: 151936,
      tied: true,
    });
    expect(DECODER_PRESETS['llama-1b']).toMatchObject({ hidden: 2048, layers: 16, heads: 32, kvHeads: 8, ffn: 8192, vocab: 128256 });
  });
});
