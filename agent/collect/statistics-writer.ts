// The owner's statistics written as they are computed: statistics.safetensors in the plan's order, each Gram group's
// statistics produced by the pass that collected it and released once written. Memory holds one pass's
// accumulators and one group's G̃ at a time, never the whole contribution.
import { createHash } from 'node:crypto';

import { ErrorCode, GramfuseError, typedArrayBytes } from '../../shared/index.js';
import { matmulNative, packUpper } from '../../shared/linalg/index.js';
import { parseStatisticId } from '../../shared/federation/index.js';
import {
  diagonalTimes,
  type DisclosurePlan,
  gramScale,
  type GramStatistics,
  type MergeSpec,
  noRowsError,
  ownerWeight,
  regularizedGram,
  statisticsAlpha,
  weightAsInOut,
  writeSafetensorsFrom,
} from '../../shared/merge/index.js';
import { type GramGroup, type ModelAnalysis, type OnnxModel, readParameterValues } from '../../shared/onnx/index.js';
import type { CollectionPass } from './passes.js';

export interface WrittenStatistics {
  /** SHA-256 (hex) of each statistic's bytes as written. */
  readonly sha256: Readonly<Record<string, string>>;
  readonly rows: Readonly<Record<string, number>>;
  readonly examples: number;
  readonly tokens: number;
}

/**
 * Writes `plan`'s statistics to `path` (atomically). `collect(groups)` runs one pass over the data for those Gram
 * groups; it is called once per pass, in order, as the writer reaches the pass's first statistic. With no passes
 * (a method without Grams) only parameters and counts are written.
 */
export async function writeStatistics(
  path: string,
  plan: DisclosurePlan,
  model: OnnxModel,
  analysis: ModelAnalysis,
  spec: MergeSpec,
  passes: readonly CollectionPass[],
  collect: (groups: readonly GramGroup[]) => Promise<GramStatistics>,
): Promise<WrittenStatistics> {
  const owner = plan.owner;
  const groups = new Map(analysis.gramGroups.map((g) => [g.id, g]));
  const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
  const passOf = new Map(passes.flatMap((pass, i) => pass.groups.map((g) => [g, i] as const)));
  const rows: Record<string, number> = {};
  let examples = 0;
  let tokens = 0;
  let current = -1;
  let collected = new Map<string, { gram: Float64Array; rows: number }>();
  // Per group: G̃ while its G̃·B (and, α chosen after the statistics, diag(G̃)·B) products are written, and the
  // statistic ids still to write.
  const tilde = new Map<string, { values: Float64Array; pending: Set<string> }>();
  const products = (group: GramGroup): string[] =>
    plan.statistics
      .filter((s) => (s.kind === 'gram_times_weight' || s.kind === 'diag_times_weight') && group.weights.includes(s.tensors[0]!))
      .map((s) => s.id);

  const ensure = async (group: string): Promise<void> => {
    const pass = passOf.get(group);
    if (pass === undefined) throw new GramfuseError(ErrorCode.Internal, `Gram group ${group} is in no collection pass`);
    if (pass === current) return;
    if (pass !== current + 1) throw new GramfuseError(ErrorCode.Internal, `collection pass ${pass} requested after pass ${current}`);
    collected = new Map(); // the previous pass's accumulators go before the next pass allocates its own
    const statistics = await collect(passes[pass]!.groups.map((id) => groups.get(id)!));
    if (statistics.fingerprint !== analysis.fingerprint)
      throw new GramfuseError(
        ErrorCode.FingerprintMismatch,
        `owner ${owner}: statistics collected on ${statistics.fingerprint}, not ${analysis.fingerprint}`,
      );
    collected = new Map(statistics.groups);
    examples = statistics.examples;
    tokens = statistics.tokens;
    current = pass;
  };
  const weight = (): number => ownerWeight(owner, spec, tokens);

  const produce = async (statisticId: string): Promise<Float64Array> => {
    const id = parseStatisticId(statisticId);
    switch (id.kind) {
      case 'gram': {
        await ensure(id.group);
        const group = groups.get(id.group)!;
        const stats = collected.get(id.group);
        if (stats === undefined || stats.rows === 0) throw noRowsError(owner, group);
        rows[id.group] = stats.rows;
        const full = regularizedGram(stats.gram, group.inDim, statisticsAlpha(spec), gramScale(spec, stats.rows));
        collected.delete(id.group);
        tilde.set(id.group, { values: full, pending: new Set(products(group)) });
        return packUpper(full, group.inDim);
      }
      case 'gram_times_weight':
      case 'diag_times_weight': {
        const layer = layers.get(id.weight)!;
        const entry = [...tilde].find(([, t]) => t.pending.has(statisticId));
        if (entry === undefined) throw new GramfuseError(ErrorCode.Internal, `${statisticId} requested before its group's Gram`);
        const [group, t] = entry;
        const b = weightAsInOut(readParameterValues(model, id.weight), layer);
        const product =
          id.kind === 'gram_times_weight'
            ? await matmulNative(t.values, b, layer.inDim, layer.inDim, layer.outDim)
            : diagonalTimes(t.values, layer.inDim, b, layer.outDim);
        t.pending.delete(statisticId);
        if (t.pending.size === 0) tilde.delete(group);
        return product;
      }
      case 'rows':
        return Float64Array.of(rows[id.group] ?? 0);
      case 'parameter': {
        const values = readParameterValues(model, id.parameter);
        const w = weight();
        if (w !== 1) for (let i = 0; i < values.length; i++) values[i] = values[i]! * w;
        return values;
      }
      default:
        return Float64Array.of(id.count === 'examples' ? examples : id.count === 'tokens' ? tokens : weight());
    }
  };

  const sha256: Record<string, string> = {};
  await writeSafetensorsFrom(
    path,
    plan.statistics.map((s) => ({
      name: s.id,
      dtype: s.dtype === 'float32' ? 'F32' : 'F64',
      shape: s.shape,
      bytes: s.bytes,
      read: async () => {
        const values = await produce(s.id);
        const bytes = typedArrayBytes(s.dtype === 'float32' ? Float32Array.from(values) : values);
        sha256[s.id] = createHash('sha256').update(bytes).digest('hex');
        return bytes;
      },
    })),
    { format: 'gramfuse-statistics-bundle', owner: plan.owner, fingerprint: plan.fingerprint },
  );
  return { sha256, rows, examples, tokens };
}
