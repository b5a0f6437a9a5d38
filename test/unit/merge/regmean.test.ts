import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createOrtSolver, type SpdSolver } from '../../../shared/linalg/index.js';
import {
  addContribution,
  buildContribution,
  emptyAggregate,
  finishParameters,
  type GramStatistics,
  MergeSpec,
  type MergeSpecInput,
  solveRegMean,
  sumMaps,
  tiesAgree,
  tiesElect,
  tiesFinish,
  tiesTrim,
  transpose,
} from '../../../shared/merge/index.js';
import { analyzeModel, type ModelAnalysis, type OnnxModel, readParameterValues, withParameterValues } from '../../../shared/onnx/index.js';
import { relativeFrobenius } from '../../helpers/fixtures.js';
import { syntheticModel } from '../../helpers/models.js';
import { gramOf, randn, rng } from '../../helpers/random.js';

const IN = 6;
// y1 = x·W1 + b (W1 stored [in, out]); y2 = x·W2ᵀ (W2 stored [out, in], via Transpose): one Gram group.
const template = syntheticModel({
  inputs: [{ name: 'x', dims: ['batch', IN] }],
  initializers: [
    { name: 'W1', dims: [IN, 3] },
    { name: 'b', dims: [3] },
    { name: 'W2', dims: [4, IN] },
  ],
  nodes: [
    { op: 'MatMul', inputs: ['x', 'W1'], output: 'h' },
    { op: 'Add', inputs: ['h', 'b'], output: 'y1' },
    { op: 'Transpose', inputs: ['W2'], output: 'W2t' },
    { op: 'MatMul', inputs: ['x', 'W2t'], output: 'y2' },
  ],
  outputs: ['y1', 'y2'],
});

interface Owner {
  model: OnnxModel;
  x: Float64Array;
  rows: number;
  b1: Float64Array; // W1 as [in, out]
  b2: Float64Array; // W2 as [in, out]
  bias: Float64Array;
}

let analysis: ModelAnalysis;
let solver: SpdSolver;
beforeAll(async () => {
  analysis = await analyzeModel(template);
  solver = await createOrtSolver({ blockSize: 4, threads: 1 });
});
afterAll(async () => solver.release());

function makeOwners(count: number, seed: number, isotropic = false): Owner[] {
  const random = rng(seed);
  return Array.from({ length: count }, (_, k) => {
    const rows = isotropic ? IN : 20 + 13 * k;
    // Different scales per owner and per feature, so the Grams differ.
    const x = isotropic
      ? Float64Array.from({ length: IN * IN }, (_, i) => (Math.floor(i / IN) === i % IN ? 2 : 0))
      : randn(random, rows * IN).map((v, i) => v * (1 + (i % IN) * 0.3 * (k + 1)));
    const model = withParameterValues(
      template,
      new Map([
        ['W1', randn(random, IN * 3)],
        ['W2', randn(random, 4 * IN)],
        ['b', randn(random, 3)],
      ]),
    );
    // Expectations use the values as stored (float32), read back from the model.
    return {
      model,
      x,
      rows,
      b1: readParameterValues(model, 'W1'),
      b2: transpose(readParameterValues(model, 'W2'), 4, IN),
      bias: readParameterValues(model, 'b'),
    };
  });
}

function statisticsOf(owner: Owner): GramStatistics {
  return {
    fingerprint: analysis.fingerprint,
    groups: new Map([['g0', { gram: gramOf(owner.x, owner.rows, IN), rows: owner.rows }]]),
    examples: owner.rows,
    tokens: owner.rows,
  };
}

async function merge(owners: Owner[], specInput: MergeSpecInput): Promise<Map<string, Float64Array>> {
  const spec = MergeSpec.parse(specInput);
  const aggregate = emptyAggregate(analysis.fingerprint);
  for (const [i, owner] of owners.entries())
    addContribution(aggregate, await buildContribution(`o${i}`, owner.model, analysis, spec, statisticsOf(owner)));
  const values = finishParameters(aggregate, spec, undefined);
  if (spec.method === 'regmean') for (const [k, v] of (await solveRegMean(aggregate, analysis, solver)).values) values.set(k, v);
  return values;
}

describe('RegMean', () => {
  it('finds the group: W1 [in,out] and W2 [out,in] share the Gram of x', () => {
    expect(analysis.gramGroups.map((g) => g.weights)).toEqual([['W1', 'W2']]);
    expect(analysis.linearLayers.map((l) => l.orientation)).toEqual(['in_out', 'out_in']);
  });

  it.each(['tokens', 'equal'] as const)('α=1 (%s weighting) is the least-squares minimiser: the gradient vanishes', async (weighting) => {
    const owners = makeOwners(3, 1);
    const merged = await merge(owners, { alpha: 1, weighting });
    for (const [name, pick, out] of [
      ['W1', (o: Owner) => o.b1, 3],
      ['W2', (o: Owner) => o.b2, 4],
    ] as const) {
      const b = name === 'W2' ? transpose(merged.get(name)!, 4, IN) : merged.get(name)!;
      // ∇ = Σ cᵢ XᵢᵀXᵢ (B − Bᵢ), cᵢ = 1 (tokens) or 1/nᵢ (equal); compare with the scale of Σ cᵢ XᵢᵀXᵢ Bᵢ.
      const grad = new Float64Array(IN * out);
      const scale = new Float64Array(IN * out);
      for (const owner of owners) {
        const c = weighting === 'tokens' ? 1 : 1 / owner.rows;
        const g = gramOf(owner.x, owner.rows, IN);
        const bi = pick(owner);
        for (let i = 0; i < IN; i++) {
          for (let j = 0; j < out; j++) {
            for (let k = 0; k < IN; k++) {
              grad[i * out + j] = grad[i * out + j]! + c * g[i * IN + k]! * (b[k * out + j]! - bi[k * out + j]!);
              scale[i * out + j] = scale[i * out + j]! + c * g[i * IN + k]! * bi[k * out + j]!;
            }
          }
        }
      }
      const gradNorm = Math.hypot(...grad);
      expect(gradNorm / Math.hypot(...scale)).toBeLessThan(1e-10);
    }
  });

  it("α=0 is the per-feature weighted average (weights = each owner's diagonal of G/n)", async () => {
    const owners = makeOwners(3, 2);
    const merged = await merge(owners, { alpha: 0 });
    const expected = new Float64Array(IN * 3);
    for (let j = 0; j < IN; j++) {
      let den = 0;
      for (const o of owners) den += gramOf(o.x, o.rows, IN)[j * IN + j]! / o.rows;
      for (const o of owners) {
        const w = gramOf(o.x, o.rows, IN)[j * IN + j]! / o.rows / den;
        for (let c = 0; c < 3; c++) expected[j * 3 + c] = expected[j * 3 + c]! + w * o.b1[j * 3 + c]!;
      }
    }
    expect(relativeFrobenius(merged.get('W1')!, expected)).toBeLessThan(1e-12);
  });

  it.each([0, 0.5, 0.9, 1])('K=1 returns the model (α=%s)', async (alpha) => {
    const [owner] = makeOwners(1, 3);
    const merged = await merge([owner!], { alpha });
    expect(relativeFrobenius(merged.get('W1')!, readParameterValues(owner!.model, 'W1'))).toBeLessThan(1e-12);
    expect(relativeFrobenius(merged.get('W2')!, readParameterValues(owner!.model, 'W2'))).toBeLessThan(1e-12);
    expect(relativeFrobenius(merged.get('b')!, owner!.bias)).toBeLessThan(1e-15);
  });

  it('equal isotropic Grams give the simple average', async () => {
    const owners = makeOwners(3, 4, true);
    const merged = await merge(owners, { alpha: 0.9 });
    const mean = Float64Array.from(owners[0]!.b1, (_, i) => owners.reduce((s, o) => s + o.b1[i]!, 0) / owners.length);
    expect(relativeFrobenius(merged.get('W1')!, mean)).toBeLessThan(1e-12);
  });

  it('other parameters are averaged with the same weighting', async () => {
    const owners = makeOwners(3, 5);
    const equal = await merge(owners, { alpha: 0.9, weighting: 'equal' });
    const tokens = await merge(owners, { alpha: 0.9, weighting: 'tokens' });
    const total = owners.reduce((s, o) => s + o.rows, 0);
    for (let i = 0; i < 3; i++) {
      expect(equal.get('b')![i]).toBeCloseTo(owners.reduce((s, o) => s + o.bias[i]!, 0) / 3, 12);
      expect(tokens.get('b')![i]).toBeCloseTo(
        owners.reduce((s, o) => s + (o.bias[i]! * o.rows) / total, 0),
        12,
      );
    }
  });
});

describe('baselines', () => {
  it('task arithmetic: base + λ·Σ(θᵢ − base)', async () => {
    const owners = makeOwners(2, 6);
    const [base] = makeOwners(1, 7);
    const spec = MergeSpec.parse({ method: 'task-arithmetic', lambda: 0.3 });
    const aggregate = emptyAggregate(analysis.fingerprint);
    for (const [i, o] of owners.entries()) addContribution(aggregate, await buildContribution(`o${i}`, o.model, analysis, spec, undefined));
    const baseValues = new Map(['W1', 'W2', 'b'].map((n) => [n, readParameterValues(base!.model, n)]));
    const merged = finishParameters(aggregate, spec, baseValues);
    const w1 = readParameterValues(owners[0]!.model, 'W1');
    const w1b = readParameterValues(owners[1]!.model, 'W1');
    const b0 = baseValues.get('W1')!;
    for (let i = 0; i < w1.length; i++) expect(merged.get('W1')![i]).toBeCloseTo(b0[i]! + 0.3 * (w1[i]! - b0[i]! + (w1b[i]! - b0[i]!)), 12);
  });

  it('TIES: trim to the top k, elect the sign, average the agreeing entries', () => {
    const base = new Map([['p', new Float64Array([0, 0, 0, 0, 0])]]);
    const a = new Map([['p', new Float64Array([3, -1, 0.1, 2, -4])]]);
    const b = new Map([['p', new Float64Array([1, 2, -0.2, -3, -2])]]);
    const trimmedA = tiesTrim(a, base, 0.6); // keeps |3|, |−4|, |2|
    const trimmedB = tiesTrim(b, base, 0.6); // keeps |−3|, |2|, |−2|
    expect(Array.from(trimmedA.get('p')!)).toEqual([3, 0, 0, 2, -4]);
    expect(Array.from(trimmedB.get('p')!)).toEqual([0, 2, 0, -3, -2]);
    const elected = tiesElect(sumMaps([trimmedA, trimmedB])); // signs of [3, 2, 0, −1, −6]
    expect(Array.from(elected.get('p')!)).toEqual([1, 1, 0, -1, -1]);
    const agreed = [tiesAgree(trimmedA, elected), tiesAgree(trimmedB, elected)];
    const merged = tiesFinish(base, sumMaps(agreed.map((x) => x.values)), sumMaps(agreed.map((x) => x.counts)), 1);
    expect(Array.from(merged.get('p')!)).toEqual([3, 2, 0, -3, -3]);
  });
});
