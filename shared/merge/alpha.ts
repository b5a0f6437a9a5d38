// α chosen after the statistics (issue #43, DESIGN.md §3): an owner's plain statistics at one α, rebuilt from its
// α-free ones and its own model, bitwise what the statistics writer would have written for a job at that α.
import { ErrorCode, GramfuseError } from '../errors.js';
import { parseStatisticId, type StatisticId, StatisticIds } from '../federation/statistic-id.js';
import { matmulNative, packUpper, unpackSymmetric } from '../linalg/index.js';
import { type ModelAnalysis, type OnnxModel, readParameterValues } from '../onnx/index.js';
import { regularizedGram, weightAsInOut } from './contributions.js';
import type { StatisticSource } from './pipeline.js';
import type { DisclosurePlan } from './plan.js';
import { alphaAfterStatistics } from './spec.js';

/** Every value of one owner's statistic, in float64. */
async function readAll(source: StatisticSource, owner: string, id: StatisticId): Promise<Float64Array> {
  const s = source.describe(owner, id);
  if (s === undefined)
    throw new GramfuseError(ErrorCode.InvalidData, `${owner} sent no statistic ${id}`, { facts: { owner, statistic: id } });
  const values = await source.read(owner, id, 0, s.bytes / (s.dtype === 'float32' ? 4 : 8));
  return values instanceof Float64Array ? values : Float64Array.from(values);
}

/**
 * `plan`'s statistics (a plain plan at α = `plan.spec.alpha`) for `plan.owner`, from the α-free statistics that owner
 * put in `source` and its model: G̃ = regularizedGram(G̃₁, α, 1) from the α-free G̃₁ = (G·scale) (bitwise the writer's
 * (G·scale)·α, see regularizedGram), G̃B by the same native product the writer runs, everything else as it was sent.
 * Needs the owner's model (its B), so it is local mode's: the coordinator holds no owner's weights.
 */
export async function statisticsAtAlpha(
  source: StatisticSource,
  plan: DisclosurePlan,
  model: OnnxModel,
  analysis: ModelAnalysis,
): Promise<Map<string, Float64Array>> {
  if (alphaAfterStatistics(plan.spec))
    throw new GramfuseError(ErrorCode.Internal, 'statisticsAtAlpha builds a plain plan (one α), not an α-free one');
  const owner = plan.owner;
  const alpha = plan.spec.alpha;
  const groups = new Map(analysis.gramGroups.map((g) => [g.id, g]));
  const groupOf = new Map(analysis.gramGroups.flatMap((g) => g.weights.map((w) => [w, g.id] as const)));
  const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
  const tilde = new Map<string, Float64Array>();
  const out = new Map<string, Float64Array>();
  for (const s of plan.statistics) {
    const id = parseStatisticId(s.id);
    if (id.kind === 'gram') {
      const n = groups.get(id.group)!.inDim;
      const full = regularizedGram(unpackSymmetric(await readAll(source, owner, StatisticIds.gram(id.group)), n), n, alpha, 1);
      tilde.clear(); // one group's G̃ in memory at a time: the plan lists a group's products right after its Gram
      tilde.set(id.group, full);
      out.set(s.id, packUpper(full, n));
    } else if (id.kind === 'gram_times_weight') {
      const layer = layers.get(id.weight)!;
      const full = tilde.get(groupOf.get(id.weight)!);
      if (full === undefined) throw new GramfuseError(ErrorCode.Internal, `${s.id} comes before its group's Gram in the plan`);
      const b = weightAsInOut(readParameterValues(model, id.weight), layer);
      out.set(s.id, await matmulNative(full, b, layer.inDim, layer.inDim, layer.outDim));
    } else if (id.kind === 'diag_times_weight') {
      throw new GramfuseError(ErrorCode.Internal, `${s.id}: a plain plan has no diag(G)·B`);
    } else {
      out.set(s.id, await readAll(source, owner, s.id as StatisticId));
    }
  }
  return out;
}
