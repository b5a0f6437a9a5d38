// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
// Decoder LLM graphs (tiny real Llama and Qwen2 exports): RegMean merged locally and from agent bundles (what agents
// upload) gives the same bytes, and every merged linear layer matches RegMean computed independently in float64 from
// the activations the models produce (dumped with withExtraOutputs, not through gramfuse's Gram graph).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { buildFeeds, inputRoles, loadTokenizer } from '../../agent/index.js';
import { referenceSolve } from '../../shared/linalg/index.js';
import { weightAsInOut } from '../../shared/merge/index.js';
import { analyzeModel, createSession, loadModel, readParameterValues, runSession, withExtraOutputs } from '../../shared/onnx/index.js';
import { runCli } from '../helpers/cli.js';
import { fixture, fixtureModel, jsonlRows, relativeFrobenius, TOKENIZER } from '../helpers/fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-decoder-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const ALPHA = 0.9;
const MAX_LENGTH = 32;
// Each owner's data: 40 real rows of its own org (all of them used: no subset, so the reference sees the same rows).
const data = ['org0', 'org1'].map((org) => {
  const path = join(work, `${org}.jsonl`);
  const rows = jsonlRows(fixture('scenarios', 'label-skew', `${org}.jsonl`), 40);
  writeFileSync(path, rows.map((r) => JSON.stringify(r)).join('\n'));
  return { path, texts: rows.map((r) => r.text) };
});

describe.each(['llama', 'qwen2'] as const)('RegMean on a decoder: %s', (arch) => {
  const models = [fixtureModel('tiny', `${arch}-a`), fixtureModel('tiny', `${arch}-b`)];
  const common = ['--tokenizer', TOKENIZER, '--max-length', String(MAX_LENGTH), '--alpha', String(ALPHA)];

  it(
    'local and bundle merges are byte-identical; each layer matches float64 RegMean from dumped activations',
    { timeout: 300_000 },
    async () => {
      const local = join(work, `${arch}-local.onnx`);
      const args = ['merge', '--out', local, ...common];
      models.forEach((m, i) => args.push('--model', m, '--data', data[i]!.path));
      const merged = await runCli(args);
      expect(merged.code, merged.stderr).toBe(0);

      const bundles: string[] = [];
      for (const [i, m] of models.entries()) {
        const out = join(work, `${arch}-bundle-${i}`);
        // Two passes over the data (a budget below the whole model's accumulators): the agent's LLM-scale path.
        const r = await runCli([
          'agent',
          'collect',
          '--model',
          m,
          '--data',
          data[i]!.path,
          '--out',
          out,
          '--dtype',
          'float64',
          '--min-rows',
          '1',
          '--memory-budget',
          '400kB',
          '--json',
          ...common,
        ]);
        expect(r.code, r.stderr).toBe(0);
        expect(JSON.parse(r.stdout).passes).toBeGreaterThan(1);
        bundles.push(out);
      }
      const fromBundles = join(work, `${arch}-bundles.onnx`);
      const b = await runCli([
        'merge',
        '--template',
        models[0]!,
        ...bundles.flatMap((d) => ['--bundle', d]),
        '--out',
        fromBundles,
        '--alpha',
        String(ALPHA),
      ]);
      expect(b.code, b.stderr).toBe(0);
      expect(readFileSync(fromBundles).equals(readFileSync(local))).toBe(true);
      expect(
        readFileSync(fromBundles.replace(/\.onnx$/, '.safetensors')).equals(readFileSync(local.replace(/\.onnx$/, '.safetensors'))),
      ).toBe(true);

      // The independent computation: activations of every Gram input, Grams in float64, then the closed form.
      const tokenizer = await loadTokenizer(TOKENIZER, { maxLength: MAX_LENGTH });
      const analysis = await analyzeModel(await loadModel(models[0]!));
      const inputs = [...new Set(analysis.gramGroups.flatMap((g) => g.inputs))];
      const perOwner: { grams: Map<string, { gram: Float64Array; rows: number }>; model: Awaited<ReturnType<typeof loadModel>> }[] = [];
      for (const [i, path] of models.entries()) {
        const model = await loadModel(path);
        const session = await createSession(withExtraOutputs(model, inputs));
        const grams = new Map(analysis.gramGroups.map((g) => [g.id, { gram: new Float64Array(g.inDim * g.inDim), rows: 0 }]));
        try {
          const encoded = data[i]!.texts.map((t) => tokenizer.encode(t));
          const feeds = buildFeeds(encoded, analysis.inputs, inputRoles(analysis.inputs), tokenizer.padId);
          const out = await runSession(session, feeds, path);
          const mask = feeds.attention_mask!.data as BigInt64Array;
          for (const group of analysis.gramGroups) {
            const acc = grams.get(group.id)!;
            for (const tensor of group.inputs) {
              const x = out[tensor]!.data as Float32Array;
              const rule = analysis.rowRules.get(tensor)!;
              const n = group.inDim;
              for (let r = 0; r < x.length / n; r++) {
                if (rule.rows === 'tokens' && mask[r] === 0n) continue;
                acc.rows++;
                for (let p = 0; p < n; p++) for (let q = 0; q < n; q++) acc.gram[p * n + q]! += x[r * n + p]! * x[r * n + q]!;
              }
            }
          }
        } finally {
          await session.release();
        }
        perOwner.push({ grams, model });
      }
      const result = await loadModel(local);
      const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
      let worst = 0;
      for (const group of analysis.gramGroups) {
        const n = group.inDim;
        const sum = new Float64Array(n * n);
        const tildes = perOwner.map(({ grams }) => {
          const { gram, rows } = grams.get(group.id)!;
          const t = gram.map((v, k) => (k % (n + 1) === 0 ? v : ALPHA * v) / rows);
          for (let k = 0; k < t.length; k++) sum[k]! += t[k]!;
          return t;
        });
        for (const weight of group.weights) {
          const layer = layers.get(weight)!;
          const m = layer.outDim;
          const rhs = new Float64Array(n * m);
          perOwner.forEach(({ model }, o) => {
            const w = weightAsInOut(readParameterValues(model, weight), layer);
            const t = tildes[o]!;
            for (let p = 0; p < n; p++)
              for (let k = 0; k < n; k++) for (let q = 0; q < m; q++) rhs[p * m + q]! += t[p * n + k]! * w[k * m + q]!;
          });
          const expected = referenceSolve(sum, n, rhs, m);
          const actual = weightAsInOut(readParameterValues(result, weight), layer);
          worst = Math.max(worst, relativeFrobenius(actual, expected));
        }
      }
      // Tolerance: the collected Grams are float32 sums from onnxruntime, the reference's are float64; the merged
      // weights are stored as float32 (≈ 6e-8 relative).
      expect(worst).toBeLessThanOrEqual(1e-5);
      console.log(`${arch}: worst relative Frobenius error of a merged layer vs float64 RegMean = ${worst.toExponential(2)}`);
    },
  );
});
