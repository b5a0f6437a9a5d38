import { ErrorCode, GramfuseError } from '../errors.js';
import { type SpdSolver, unpackSymmetric } from '../linalg/index.js';
import type { GramGroup, LinearLayer, ModelAnalysis } from '../onnx/index.js';
import { type Aggregate, weightFromInOut } from './contributions.js';
import { defaultLambda, type MergeSpec } from './spec.js';

/** Per Gram group: how its solve went (written into the merge report). */
export interface LayerDiagnostics {
  readonly group: string;
  readonly weights: readonly string[];
  readonly inDim: number;
  /** Right-hand sides: Σ of the group's output dims. */
  readonly rhs: number;
  readonly rows: number;
  readonly jitter: number;
  readonly conditionEstimate: number;
  readonly relativeResidual: number;
  readonly residualColumns: number;
  readonly seconds: number;
  /** The solver worker that solved the group (distributed solve); absent when the coordinator solved it. */
  readonly solvedBy?: string;
}

/**
 * RegMean per Gram group: B* = (Σ G̃ᵢ)⁻¹ Σ G̃ᵢBᵢ for all weights of the group at once (one factorization).
 * Groups are solved one after another, so memory holds one group's matrices at a time.
 */
/** One Gram group's linear system as summed: Σ G̃ (the upper triangle packed row by row) and R = Σ G̃B (n × rhs, the weights side by side). */
export interface GroupSystem {
  readonly n: number;
  readonly rhs: number;
  readonly packed: Float64Array;
  readonly r: Float64Array;
}

/**
 * The group's system from the aggregate: its packed Σ G̃ and its members' Σ G̃B side by side, in the group's order.
 * An α-free aggregate (α chosen after the statistics: Σ G, Σ G·B and Σ diag(G)·B) gives the system at `alpha`:
 * Σ G̃ = αΣG + (1−α)Σ diag G (off the diagonal ΣG·α, the diagonal as summed) and Σ G̃B = αΣGB + (1−α)Σ diag(G)·B.
 */
export function groupSystem(aggregate: Aggregate, group: GramGroup, layers: ReadonlyMap<string, LinearLayer>, alpha?: number): GroupSystem {
  const summed = aggregate.grams.get(group.id);
  if (summed === undefined)
    throw new GramfuseError(ErrorCode.InvalidData, `no owner sent a Gram for group ${group.id}`, { facts: { group: group.id } });
  const alphaFree = aggregate.diagTimesWeight.size > 0;
  if (alphaFree && alpha === undefined)
    throw new GramfuseError(ErrorCode.Internal, `group ${group.id}: α-free statistics need the α to solve`, { facts: { group: group.id } });
  const n = group.inDim;
  const packed = alphaFree ? gramAtAlpha(summed, n, alpha!) : summed;
  const members = group.weights.map((w) => layers.get(w)!);
  const rhs = members.reduce((s, l) => s + l.outDim, 0);
  const r = new Float64Array(n * rhs);
  let offset = 0;
  for (const layer of members) {
    const part = aggregate.gramTimesWeight.get(layer.weight);
    if (part === undefined)
      throw new GramfuseError(ErrorCode.InvalidData, `no owner sent G·W for ${layer.weight}`, { facts: { weight: layer.weight } });
    const m = layer.outDim;
    if (alphaFree) {
      const diagonal = aggregate.diagTimesWeight.get(layer.weight);
      if (diagonal === undefined)
        throw new GramfuseError(ErrorCode.InvalidData, `no owner sent diag(G)·W for ${layer.weight}`, { facts: { weight: layer.weight } });
      const a = alpha!;
      for (let i = 0; i < n; i++)
        for (let j = 0; j < m; j++) r[i * rhs + offset + j] = a * part[i * m + j]! + (1 - a) * diagonal[i * m + j]!;
    } else {
      for (let i = 0; i < n; i++) r.set(part.subarray(i * m, (i + 1) * m), i * rhs + offset);
    }
    offset += m;
  }
  return { n, rhs, packed, r };
}

/** A packed (upper triangle, row by row) Gram with its off-diagonal entries times α: αG + (1−α)diag G. */
export function gramAtAlpha(packed: Float64Array, n: number, alpha: number): Float64Array {
  const out = new Float64Array(packed.length);
  let k = 0;
  for (let i = 0; i < n; i++) {
    out[k] = packed[k]!;
    k++;
    for (let j = i + 1; j < n; j++, k++) out[k] = packed[k]! * alpha;
  }
  return out;
}

/** The merged weights of a group from its solution X (n × rhs): each member's columns, in the weight's own layout. */
export function groupSolutionValues(
  x: Float64Array,
  group: GramGroup,
  layers: ReadonlyMap<string, LinearLayer>,
): Map<string, Float64Array> {
  const n = group.inDim;
  const members = group.weights.map((w) => layers.get(w)!);
  const rhs = members.reduce((s, l) => s + l.outDim, 0);
  const values = new Map<string, Float64Array>();
  let offset = 0;
  for (const layer of members) {
    const b = new Float64Array(n * layer.outDim);
    for (let i = 0; i < n; i++) b.set(x.subarray(i * rhs + offset, i * rhs + offset + layer.outDim), i * layer.outDim);
    values.set(layer.weight, weightFromInOut(b, layer));
    offset += layer.outDim;
  }
  return values;
}

export async function solveRegMean(
  aggregate: Aggregate,
  analysis: ModelAnalysis,
  solver: SpdSolver,
  onGroup?: (done: number, total: number, diagnostics: LayerDiagnostics) => void,
  /** The α to solve an α-free aggregate at (α chosen after the statistics); unused otherwise. */
  alpha?: number,
): Promise<{ values: Map<string, Float64Array>; layers: LayerDiagnostics[] }> {
  const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
  const values = new Map<string, Float64Array>();
  const diagnostics: LayerDiagnostics[] = [];
  for (const [index, group] of analysis.gramGroups.entries()) {
    const system = groupSystem(aggregate, group, layers, alpha);
    const { n, rhs } = system;
    const a = unpackSymmetric(system.packed, n);
    const label = `${group.id} (${group.weights.join(', ')})`;
    const result = await solver.solve(a, n, system.r, rhs, label);
    for (const [name, value] of groupSolutionValues(result.x, group, layers)) values.set(name, value);
    const d: LayerDiagnostics = {
      group: group.id,
      weights: group.weights,
      inDim: n,
      rhs,
      rows: aggregate.rows[group.id] ?? 0,
      jitter: result.jitter,
      conditionEstimate: result.conditionEstimate,
      relativeResidual: result.relativeResidual,
      residualColumns: result.residualColumns,
      seconds: result.seconds,
    };
    diagnostics.push(d);
    onGroup?.(index + 1, analysis.gramGroups.length, d);
  }
  return { values, layers: diagnostics };
}

/**
 * The merged value of every parameter that is not solved: the weighted average Σ/Σweight for RegMean
 * and `average` (and for the names in `averaged`); base + λ·(Σθᵢ − K·base) for task arithmetic.
 */
export function finishParameters(
  aggregate: Aggregate,
  spec: MergeSpec,
  base: ReadonlyMap<string, Float64Array> | undefined,
  averaged: ReadonlySet<string> = new Set(),
): Map<string, Float64Array> {
  const out = new Map<string, Float64Array>();
  const owners = aggregate.owners.length;
  for (const [name, sum] of aggregate.parameters) {
    const merged = new Float64Array(sum.length);
    if (spec.method === 'task-arithmetic' && !averaged.has(name)) {
      const b = base?.get(name);
      if (b === undefined)
        throw new GramfuseError(ErrorCode.InvalidArgument, `task arithmetic needs the base model's ${name} (--base)`, {
          facts: { parameter: name },
        });
      const lambda = spec.lambda ?? defaultLambda(spec.method);
      for (let i = 0; i < sum.length; i++) merged[i] = b[i]! + lambda * (sum[i]! - owners * b[i]!);
    } else {
      for (let i = 0; i < sum.length; i++) merged[i] = sum[i]! / aggregate.weight;
    }
    out.set(name, merged);
  }
  return out;
}
