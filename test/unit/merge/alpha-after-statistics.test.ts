// α chosen after the statistics (issue #43, DESIGN.md §3): owners send α-free G, G·B and diag(G)·B, and any α is
// solved from their sums. Checked against the plain contract (G̃ at α per owner) and a float64 closed form here.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createOrtSolver, referenceSolve, type SpdSolver } from '../../../shared/linalg/index.js';
import {
  addContribution,
  buildContribution,
  DisclosurePolicy,
  emptyAggregate,
  type GramStatistics,
  MergeSpec,
  type MergeSpecInput,
  planDisclosure,
  regularizedGram,
  solveRegMean,
  transpose,
} from '../../../shared/merge/index.js';
import { analyzeModel, type ModelAnalysis, type OnnxModel, readParameterValues, withParameterValues } from '../../../shared/onnx/index.js';
import { relativeFrobenius } from '../../helpers/fixtures.js';
import { syntheticModel } from '../../helpers/models.js';
import { gramOf, randn, rng } from '../../helpers/random.js';

const IN = 6;
// y1 = x·W1 (W1 stored [in, out]); y2 = x·W2ᵀ (W2 stored [out, in]): one Gram group of two weights.
const template = syntheticModel({
  inputs: [{ name: 'x', dims: ['batch', IN] }],
  initializers: [
    { name: 'W1', dims: [IN, 3] },
    { name: 'W2', dims: [4, IN] },
  ],
  nodes: [
    { op: 'MatMul', inputs: ['x', 'W1'], output: 'y1' },
    { op: 'Transpose', inputs: ['W2'], output: 'W2t' },
    { op: 'MatMul', inputs: ['x', 'W2t'], output: 'y2' },
  ],
  outputs: ['y1', 'y2'],
});

interface Owner {
  readonly model: OnnxModel;
  readonly gram: Float64Array;
  readonly rows: number;
}

let analysis: ModelAnalysis;
let solver: SpdSolver;
let owners: Owner[];
beforeAll(async () => {
  analysis = await analyzeModel(template);
  solver = await createOrtSolver({ blockSize: 4, threads: 1 });
  const random = rng(43);
  owners = [0, 1, 2].map((k) => {
    const rows = 15 + 11 * k;
    const x = randn(random, rows * IN).map((v, i) => v * (1 + (i % IN) * 0.4 * (k + 1)));
    const model = withParameterValues(
      template,
      new Map([
        ['W1', randn(random, IN * 3)],
        ['W2', randn(random, 4 * IN)],
      ]),
    );
    return { model, gram: gramOf(x, rows, IN), rows };
  });
});
afterAll(async () => solver.release());

const statisticsOf = (owner: Owner): GramStatistics => ({
  fingerprint: analysis.fingerprint,
  groups: new Map([['g0', { gram: owner.gram, rows: owner.rows }]]),
  examples: owner.rows,
  tokens: owner.rows,
});

async function solved(specInput: MergeSpecInput, alpha?: number): Promise<Map<string, Float64Array>> {
  const spec = MergeSpec.parse(specInput);
  const aggregate = emptyAggregate(analysis.fingerprint);
  for (const [i, owner] of owners.entries())
    addContribution(aggregate, await buildContribution(`o${i}`, owner.model, analysis, spec, statisticsOf(owner)));
  return (await solveRegMean(aggregate, analysis, solver, undefined, alpha)).values;
}

/** (Σ G̃ᵢ)⁻¹ Σ G̃ᵢBᵢ in float64, G̃ᵢ = s(αGᵢ + (1−α)diag Gᵢ) formed here, B as [in, out]. */
function closedForm(alpha: number, weighting: 'equal' | 'tokens', weight: 'W1' | 'W2'): Float64Array {
  const out = weight === 'W1' ? 3 : 4;
  const a = new Float64Array(IN * IN);
  const r = new Float64Array(IN * out);
  for (const owner of owners) {
    const s = weighting === 'equal' ? 1 / owner.rows : 1;
    const stored = readParameterValues(owner.model, weight);
    const b = weight === 'W1' ? stored : transpose(stored, 4, IN);
    for (let p = 0; p < IN; p++)
      for (let q = 0; q < IN; q++) {
        const t = s * (p === q ? owner.gram[p * IN + q]! : alpha * owner.gram[p * IN + q]!);
        a[p * IN + q]! += t;
        for (let j = 0; j < out; j++) r[p * out + j]! += t * b[q * out + j]!;
      }
  }
  return referenceSolve(a, IN, r, out);
}

describe('α after the statistics', () => {
  it('plans diag(G)·B beside G·B for every solved weight only when α is chosen after the statistics', () => {
    const policy = DisclosurePolicy.parse({});
    const plain = planDisclosure('o', analysis, MergeSpec.parse({}), 'float64', policy);
    const auto = planDisclosure('o', analysis, MergeSpec.parse({ alphaCandidates: [0.5, 1] }), 'float64', policy);
    expect(plain.statistics.filter((s) => s.kind === 'diag_times_weight')).toEqual([]);
    const extra = auto.statistics.filter((s) => s.kind === 'diag_times_weight');
    expect(extra.map((s) => [s.id, s.shape])).toEqual([
      ['diag_times_weight/W1', [IN, 3]],
      ['diag_times_weight/W2', [IN, 4]],
    ]);
    // One more right-hand side per weight, nothing else.
    expect(auto.totals.bytes - plain.totals.bytes).toBe((IN * 3 + IN * 4) * 8);
  });

  it('rebuilds G̃ at any α bitwise from the α-free G̃ (what α-auto writes its chosen model from)', () => {
    const g = owners[1]!.gram;
    const scale = 1 / owners[1]!.rows;
    const free = regularizedGram(g, IN, 1, scale);
    for (const alpha of [0.1, 0.3, 0.7, 0.95]) {
      const direct = regularizedGram(g, IN, alpha, scale);
      const rebuilt = regularizedGram(free, IN, alpha, 1);
      expect(rebuilt.every((v, i) => Object.is(v, direct[i]))).toBe(true);
    }
  });

  it.each(['equal', 'tokens'] as const)(
    'solving α from Σ G, Σ GB, Σ diag(G)B equals the plain contract at α and a float64 closed form (%s weighting)',
    async (weighting) => {
      for (const alpha of [0, 0.3, 0.9, 1]) {
        const fromSums = await solved({ weighting, alphaCandidates: [0, 0.3, 0.9, 1] }, alpha);
        const plain = await solved({ weighting, alpha });
        for (const weight of ['W1', 'W2'] as const) {
          const got = fromSums.get(weight)!;
          expect(relativeFrobenius(got, plain.get(weight)!)).toBeLessThan(1e-12);
          const asInOut = weight === 'W1' ? got : transpose(got, 4, IN);
          expect(relativeFrobenius(asInOut, closedForm(alpha, weighting, weight))).toBeLessThan(1e-10);
        }
      }
    },
  );

  it('refuses to solve α-free sums without an α', async () => {
    const spec = MergeSpec.parse({ alphaCandidates: [0.5] });
    const aggregate = emptyAggregate(analysis.fingerprint);
    addContribution(aggregate, await buildContribution('o0', owners[0]!.model, analysis, spec, statisticsOf(owners[0]!)));
    await expect(solveRegMean(aggregate, analysis, solver)).rejects.toThrow(/α-free statistics need the α to solve/);
  });
});
