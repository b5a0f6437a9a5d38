import { ErrorCode, GramfuseError } from '../errors.js';
import { matmulNative, packUpper } from '../linalg/index.js';
import type { LinearLayer, ModelAnalysis, OnnxModel } from '../onnx/index.js';
import { readParameterValues } from '../onnx/index.js';
import { alphaAfterStatistics, type MergeSpec, statisticsAlpha } from './spec.js';

/** Σ over an owner's rows of xxᵀ per Gram group, accumulated in float64 by the agent's collection. */
export interface GramStatistics {
  readonly fingerprint: string;
  /** Per Gram group id: the full symmetric Gram (inDim × inDim, row-major) and the rows that entered it. */
  readonly groups: ReadonlyMap<string, { readonly gram: Float64Array; readonly rows: number }>;
  readonly examples: number;
  /** Real (unpadded) tokens the owner's data produced. */
  readonly tokens: number;
}

/**
 * What leaves one owner (DESIGN.md §3): values the coordinator only has to add up. For RegMean, per Gram
 * group the packed upper triangle of G̃ (after the weighting) and per solved weight G̃·B; for every other
 * parameter `weight × value`; and counts.
 */
export interface Contribution {
  readonly owner: string;
  readonly fingerprint: string;
  /** 1 with `equal` weighting, the owner's token count with `tokens`; parameters are pre-multiplied by it. */
  readonly weight: number;
  readonly examples: number;
  readonly tokens: number;
  /** Rows per Gram group. */
  readonly rows: Readonly<Record<string, number>>;
  /** Gram group id → packed upper triangle of the weighted G̃ (length n(n+1)/2). */
  readonly grams: ReadonlyMap<string, Float64Array>;
  /** Linear weight name → G̃·B (inDim × outDim, row-major; B = the weight as [in, out]). */
  readonly gramTimesWeight: ReadonlyMap<string, Float64Array>;
  /** α chosen after the statistics only (then G̃ = G, scaled): weight name → diag(G)·B, scaled alike. @default none */
  readonly diagTimesWeight?: ReadonlyMap<string, Float64Array>;
  /** Parameter name → weight × value (every parameter RegMean does not solve; all of them for the baselines). */
  readonly parameters: ReadonlyMap<string, Float64Array>;
}

/** The weight as B ∈ ℝ^{in×out}, whatever orientation it is stored in. */
export function weightAsInOut(values: Float64Array, layer: LinearLayer): Float64Array {
  if (layer.orientation === 'in_out') return values;
  return transpose(values, layer.outDim, layer.inDim);
}

/** The stored orientation of B ∈ ℝ^{in×out}. */
export function weightFromInOut(b: Float64Array, layer: LinearLayer): Float64Array {
  if (layer.orientation === 'in_out') return b;
  return transpose(b, layer.inDim, layer.outDim);
}

export function transpose(a: Float64Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j]!;
  return out;
}

/**
 * G̃ = scale·(αG + (1−α)·diag G), full. Off the diagonal it is (G·scale)·α, in that order: so G̃ at any α is
 * bitwise `regularizedGram(regularizedGram(G, n, 1, scale), n, α, 1)`, which is how α-auto rebuilds an owner's
 * plain statistics at the chosen α from the α-free ones (cli/local-merge.ts).
 */
export function regularizedGram(gram: Float64Array, n: number, alpha: number, scale: number): Float64Array {
  const out = new Float64Array(n * n);
  for (let i = 0; i < n * n; i++) out[i] = gram[i]! * scale * alpha;
  for (let i = 0; i < n; i++) out[i * n + i] = gram[i * n + i]! * scale;
  return out;
}

/** diag(G̃)·B: each row i of B (in × out, row-major) times G̃ᵢᵢ. O(in·out), no matrix product. */
export function diagonalTimes(gram: Float64Array, n: number, b: Float64Array, out: number): Float64Array {
  const product = new Float64Array(n * out);
  for (let i = 0; i < n; i++) {
    const d = gram[i * n + i]!;
    for (let j = 0; j < out; j++) product[i * out + j] = d * b[i * out + j]!;
  }
  return product;
}

/**
 * What an owner's parameters (and, with `tokens` weighting, its G̃) are multiplied by: its token count under
 * `tokens` weighting (not for task arithmetic or TIES, which weigh owners equally), else 1.
 */
export function ownerWeight(owner: string, spec: MergeSpec, tokens: number): number {
  const weight = spec.weighting === 'tokens' && spec.method !== 'task-arithmetic' && spec.method !== 'ties' ? tokens : 1;
  if (weight <= 0) {
    throw new GramfuseError(ErrorCode.InvalidData, `owner ${owner}: tokens weighting needs statistics with at least one token`, {
      facts: { owner },
    });
  }
  return weight;
}

/** The factor on G in G̃: 1/rows with `equal` weighting (each owner's Gram a mean), 1 with `tokens` (a sum). */
export function gramScale(spec: MergeSpec, rows: number): number {
  return spec.weighting === 'equal' ? 1 / rows : 1;
}

/** A Gram group no row of the owner's data reached: RegMean has nothing to solve it with. */
export function noRowsError(owner: string, group: { readonly id: string; readonly weights: readonly string[] }): GramfuseError {
  return new GramfuseError(
    ErrorCode.InvalidData,
    `owner ${owner}: no rows reached Gram group ${group.id} (${group.weights[0]}…); its data produced no tokens for that layer`,
    { facts: { owner, group: group.id } },
  );
}

/** Builds an owner's contribution from its model and (for RegMean) its Gram statistics. */
export async function buildContribution(
  owner: string,
  model: OnnxModel,
  analysis: ModelAnalysis,
  spec: MergeSpec,
  statistics: GramStatistics | undefined,
): Promise<Contribution> {
  const tokens = statistics?.tokens ?? 0;
  const weight = ownerWeight(owner, spec, tokens);
  const grams = new Map<string, Float64Array>();
  const gramTimesWeight = new Map<string, Float64Array>();
  const diagTimesWeight = new Map<string, Float64Array>();
  const rows: Record<string, number> = {};
  const solved = new Set<string>();
  if (spec.method === 'regmean') {
    if (statistics === undefined) throw new GramfuseError(ErrorCode.Internal, `owner ${owner}: RegMean needs Gram statistics`);
    if (statistics.fingerprint !== analysis.fingerprint) {
      throw new GramfuseError(
        ErrorCode.FingerprintMismatch,
        `owner ${owner}: statistics were collected on a model with fingerprint ${statistics.fingerprint}, not ${analysis.fingerprint}`,
        {
          facts: { owner, found: statistics.fingerprint, expected: analysis.fingerprint },
        },
      );
    }
    const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
    for (const group of analysis.gramGroups) {
      const stats = statistics.groups.get(group.id);
      if (stats === undefined || stats.rows === 0) throw noRowsError(owner, group);
      rows[group.id] = stats.rows;
      const n = group.inDim;
      const tilde = regularizedGram(stats.gram, n, statisticsAlpha(spec), gramScale(spec, stats.rows));
      grams.set(group.id, packUpper(tilde, n));
      for (const name of group.weights) {
        const layer = layers.get(name)!;
        const b = weightAsInOut(readParameterValues(model, name), layer);
        gramTimesWeight.set(name, await matmulNative(tilde, b, n, n, layer.outDim));
        if (alphaAfterStatistics(spec)) diagTimesWeight.set(name, diagonalTimes(tilde, n, b, layer.outDim));
        solved.add(name);
      }
    }
  }
  const parameters = new Map<string, Float64Array>();
  for (const parameter of analysis.parameters) {
    if (solved.has(parameter.name)) continue;
    const values = readParameterValues(model, parameter.name);
    if (weight !== 1) for (let i = 0; i < values.length; i++) values[i] = values[i]! * weight;
    parameters.set(parameter.name, values);
  }
  return {
    owner,
    fingerprint: analysis.fingerprint,
    weight,
    examples: statistics?.examples ?? 0,
    tokens,
    rows,
    grams,
    gramTimesWeight,
    ...(alphaAfterStatistics(spec) ? { diagTimesWeight } : {}),
    parameters,
  };
}

/** The sum of contributions: all the coordinator keeps (its size does not grow with data or owners). */
export interface Aggregate {
  readonly fingerprint: string;
  readonly owners: string[];
  weight: number;
  readonly rows: Record<string, number>;
  readonly grams: Map<string, Float64Array>;
  readonly gramTimesWeight: Map<string, Float64Array>;
  /** Σ diag(G)·B per weight: only when α is chosen after the statistics (then `grams` and `gramTimesWeight` are α-free). */
  readonly diagTimesWeight: Map<string, Float64Array>;
  readonly parameters: Map<string, Float64Array>;
}

export function emptyAggregate(fingerprint: string): Aggregate {
  return {
    fingerprint,
    owners: [],
    weight: 0,
    rows: {},
    grams: new Map(),
    gramTimesWeight: new Map(),
    diagTimesWeight: new Map(),
    parameters: new Map(),
  };
}

/** Adds one contribution; every tensor must match what the aggregate already holds. */
export function addContribution(aggregate: Aggregate, contribution: Contribution): void {
  if (contribution.fingerprint !== aggregate.fingerprint) {
    throw new GramfuseError(
      ErrorCode.FingerprintMismatch,
      `owner ${contribution.owner}: model fingerprint ${contribution.fingerprint} differs from the job's ${aggregate.fingerprint}; all owners must fine-tune the same base model`,
      { facts: { owner: contribution.owner, found: contribution.fingerprint, expected: aggregate.fingerprint } },
    );
  }
  if (aggregate.owners.includes(contribution.owner)) {
    throw new GramfuseError(ErrorCode.InvalidArgument, `owner ${contribution.owner} contributed twice`, {
      facts: { owner: contribution.owner },
    });
  }
  const add = (into: Map<string, Float64Array>, from: ReadonlyMap<string, Float64Array>, kind: string): void => {
    if (aggregate.owners.length > 0 && (into.size !== from.size || [...from.keys()].some((k) => !into.has(k)))) {
      throw new GramfuseError(ErrorCode.InvalidData, `owner ${contribution.owner}: its ${kind} do not match the other owners'`, {
        facts: { owner: contribution.owner, kind },
      });
    }
    for (const [name, values] of from) {
      const sum = into.get(name);
      if (sum === undefined) {
        into.set(name, values.slice());
        continue;
      }
      if (sum.length !== values.length) {
        throw new GramfuseError(
          ErrorCode.InvalidData,
          `owner ${contribution.owner}: ${kind} ${name} has ${values.length} values, expected ${sum.length}`,
          {
            facts: { owner: contribution.owner, tensor: name },
          },
        );
      }
      for (let i = 0; i < sum.length; i++) sum[i] = sum[i]! + values[i]!;
    }
  };
  add(aggregate.grams, contribution.grams, 'Grams');
  add(aggregate.gramTimesWeight, contribution.gramTimesWeight, 'G·W products');
  add(aggregate.diagTimesWeight, contribution.diagTimesWeight ?? new Map(), 'diag(G)·W products');
  add(aggregate.parameters, contribution.parameters, 'parameters');
  for (const [group, rows] of Object.entries(contribution.rows)) aggregate.rows[group] = (aggregate.rows[group] ?? 0) + rows;
  aggregate.weight += contribution.weight;
  aggregate.owners.push(contribution.owner);
}
