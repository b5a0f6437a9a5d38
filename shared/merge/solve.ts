import { ErrorCode, GramfuseError } from '../errors.js';
import { type SpdSolver, unpackSymmetric } from '../linalg/index.js';
import type { ModelAnalysis } from '../onnx/index.js';
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
}

/**
 * RegMean per Gram group: B* = (Σ G̃ᵢ)⁻¹ Σ G̃ᵢBᵢ for all weights of the group at once (one factorization).
 * Groups are solved one after another, so memory holds one group's matrices at a time.
 */
export async function solveRegMean(
  aggregate: Aggregate,
  analysis: ModelAnalysis,
  solver: SpdSolver,
  onGroup?: (done: number, total: number, diagnostics: LayerDiagnostics) => void,
): Promise<{ values: Map<string, Float64Array>; layers: LayerDiagnostics[] }> {
  const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
  const values = new Map<string, Float64Array>();
  const diagnostics: LayerDiagnostics[] = [];
  for (const [index, group] of analysis.gramGroups.entries()) {
    const packed = aggregate.grams.get(group.id);
    if (packed === undefined)
      throw new GramfuseError(ErrorCode.InvalidData, `no owner sent a Gram for group ${group.id}`, { facts: { group: group.id } });
    const n = group.inDim;
    const a = unpackSymmetric(packed, n);
    const members = group.weights.map((w) => layers.get(w)!);
    const rhs = members.reduce((s, l) => s + l.outDim, 0);
    const r = new Float64Array(n * rhs);
    let offset = 0;
    for (const layer of members) {
      const part = aggregate.gramTimesWeight.get(layer.weight);
      if (part === undefined)
        throw new GramfuseError(ErrorCode.InvalidData, `no owner sent G·W for ${layer.weight}`, { facts: { weight: layer.weight } });
      for (let i = 0; i < n; i++) r.set(part.subarray(i * layer.outDim, (i + 1) * layer.outDim), i * rhs + offset);
      offset += layer.outDim;
    }
    const label = `${group.id} (${group.weights.join(', ')})`;
    const result = await solver.solve(a, n, r, rhs, label);
    offset = 0;
    for (const layer of members) {
      const b = new Float64Array(n * layer.outDim);
      for (let i = 0; i < n; i++) b.set(result.x.subarray(i * rhs + offset, i * rhs + offset + layer.outDim), i * layer.outDim);
      values.set(layer.weight, weightFromInOut(b, layer));
      offset += layer.outDim;
    }
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
