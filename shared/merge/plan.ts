import { z } from 'zod';

import { ErrorCode, GramfuseError } from '../errors.js';
import { parseStatisticId, StatisticIds } from '../federation/statistic-id.js';
import { packedLength } from '../linalg/index.js';
import type { ModelAnalysis } from '../onnx/index.js';
import type { Contribution } from './contributions.js';
import { alphaAfterStatistics, MergeSpec } from './spec.js';

/** Kinds of statistic that can leave an owner (issue #4). */
export const StatisticKind = z.enum(['gram', 'gram_times_weight', 'diag_times_weight', 'parameter', 'count']);
export type StatisticKind = z.infer<typeof StatisticKind>;

/** One tensor that would leave the owner: what it is, how big, and (after collection) from how many rows. */
export const PlannedStatistic = z
  .object({
    id: z
      .string()
      .min(1)
      .describe('stable id: gram/<group>, gram_times_weight/<weight>, diag_times_weight/<weight>, parameter/<name>, count/<what>'),
    kind: StatisticKind,
    tensors: z.array(z.string()).describe('the model tensors (weights, parameters) this statistic concerns'),
    shape: z.array(z.number().int().nonnegative()).describe('shape as stored; packed Grams are 1-D of length n(n+1)/2'),
    dtype: z
      .enum(['float32', 'float64', 'ring64'])
      .describe('ring64: a masked statistic of a secure job, fixed point in Z/2⁶⁴ (little-endian uint64)'),
    packing: z.enum(['dense', 'upper_triangle']).describe('upper_triangle: a symmetric n×n matrix, rows of its upper triangle'),
    bytes: z.number().int().nonnegative(),
    rows: z.number().int().nonnegative().optional().describe('rows (tokens or vectors) that entered it, after collection'),
    sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .optional()
      .describe('SHA-256 of the stored bytes, in a bundle'),
  })
  .strict();
export type PlannedStatistic = z.infer<typeof PlannedStatistic>;

/** The owner's limits on what may leave. */
export const DisclosurePolicy = z
  .object({
    minRowsPerGroup: z.number().int().nonnegative().default(256).describe('refuse to disclose a Gram built from fewer rows'),
    allowedLayers: z.array(z.string()).optional().describe('if set, only these weights may have Gram statistics disclosed'),
  })
  .strict();
export type DisclosurePolicy = z.infer<typeof DisclosurePolicy>;

/**
 * Which tokens' activations enter an owner's Grams: `non_pad` (the default), every token of every example but
 * padding — for chat data the whole rendered conversation: every role's turns, the template's markers and its special
 * tokens; `all`, padding positions too (`spec.includePadding`, the reference code's behaviour).
 */
export const GramTokens = z.enum(['non_pad', 'all']);
export type GramTokens = z.infer<typeof GramTokens>;

export const DisclosurePlan = z
  .object({
    owner: z.string(),
    fingerprint: z.string(),
    spec: MergeSpec,
    statistics: z.array(PlannedStatistic),
    totals: z.object({ statistics: z.number().int(), bytes: z.number().int() }).strict(),
    policy: DisclosurePolicy,
    gramTokens: GramTokens.optional().describe('which tokens enter the Grams (RegMean only; absent in plans made before it was stated)'),
  })
  .strict();
export type DisclosurePlan = z.infer<typeof DisclosurePlan>;

const width = (dtype: PlannedStatistic['dtype']): number => (dtype === 'float32' ? 4 : 8);

/**
 * Models with more parameter bytes than this send float32 statistics when the owner asks for `auto` (the agent's
 * default): past 1 GiB of parameters (a 0.25B model in float32, 0.5B in float16) float64 Grams reach gigabytes per
 * owner, while float32 keeps ≈ 7 significant digits of sums accumulated in float64 — what the float32 Gram outputs
 * of onnxruntime carry anyway. Smaller models send float64 (exact sums of those outputs).
 */
export const FLOAT32_STATISTICS_ABOVE_BYTES = 1024 ** 3;

/** The statistics' dtype: the owner's choice, or for `auto` by the model's parameter bytes. */
export function statisticsDtype(requested: 'auto' | 'float32' | 'float64', analysis: ModelAnalysis): 'float32' | 'float64' {
  if (requested !== 'auto') return requested;
  const bytes = analysis.parameters.reduce((sum, p) => sum + p.bytes, 0);
  return bytes > FLOAT32_STATISTICS_ABOVE_BYTES ? 'float32' : 'float64';
}

/**
 * Every statistic the owner would disclose for this model and merge spec, before anything is computed.
 * Statistics are float32 or float64 by `dtype`; counts are always float64 (exact integers).
 */
export function planDisclosure(
  owner: string,
  analysis: ModelAnalysis,
  spec: MergeSpec,
  dtype: 'float32' | 'float64',
  policy: DisclosurePolicy,
): DisclosurePlan {
  const statistics: PlannedStatistic[] = [];
  const add = (s: Omit<PlannedStatistic, 'bytes'>): void => {
    statistics.push({ ...s, bytes: s.shape.reduce((a, b) => a * b, 1) * width(s.dtype) });
  };
  const solved = new Set<string>();
  if (spec.method === 'regmean') {
    const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
    for (const group of analysis.gramGroups) {
      add({
        id: StatisticIds.gram(group.id),
        kind: 'gram',
        tensors: [...group.weights],
        shape: [packedLength(group.inDim)],
        dtype,
        packing: 'upper_triangle',
      });
      for (const weight of group.weights) {
        const layer = layers.get(weight)!;
        add({
          id: StatisticIds.gramTimesWeight(weight),
          kind: 'gram_times_weight',
          tensors: [weight],
          shape: [layer.inDim, layer.outDim],
          dtype,
          packing: 'dense',
        });
        // α chosen after the statistics: diag(G)·B beside G·B, so that any α is solved from the sums (§3).
        if (alphaAfterStatistics(spec))
          add({
            id: StatisticIds.diagTimesWeight(weight),
            kind: 'diag_times_weight',
            tensors: [weight],
            shape: [layer.inDim, layer.outDim],
            dtype,
            packing: 'dense',
          });
        solved.add(weight);
      }
      add({ id: StatisticIds.rows(group.id), kind: 'count', tensors: [...group.weights], shape: [], dtype: 'float64', packing: 'dense' });
    }
  }
  for (const parameter of analysis.parameters) {
    if (solved.has(parameter.name)) continue;
    add({
      id: StatisticIds.parameter(parameter.name),
      kind: 'parameter',
      tensors: [parameter.name],
      shape: [...parameter.shape],
      dtype,
      packing: 'dense',
    });
  }
  for (const what of ['examples', 'tokens', 'weight'] as const)
    add({ id: StatisticIds.count(what), kind: 'count', tensors: [], shape: [], dtype: 'float64', packing: 'dense' });
  return {
    owner,
    fingerprint: analysis.fingerprint,
    spec,
    statistics,
    totals: { statistics: statistics.length, bytes: statistics.reduce((s, x) => s + x.bytes, 0) },
    policy,
    ...(spec.method === 'regmean' ? { gramTokens: spec.includePadding ? ('all' as const) : ('non_pad' as const) } : {}),
  };
}

/** Policy checks possible before collection: an allow-list of layers. Throws POLICY_VIOLATION; nothing is sent. */
export function checkPolicyBeforeCollection(plan: DisclosurePlan): void {
  const allowed = plan.policy.allowedLayers;
  if (allowed === undefined) return;
  const allowedSet = new Set(allowed);
  const outside = plan.statistics.filter(
    (s) =>
      (s.kind === 'gram' || s.kind === 'gram_times_weight' || s.kind === 'diag_times_weight') && s.tensors.some((t) => !allowedSet.has(t)),
  );
  if (outside.length > 0) {
    throw new GramfuseError(
      ErrorCode.PolicyViolation,
      `policy: ${outside.length} statistics concern layers outside the allow-list (${outside
        .slice(0, 3)
        .map((s) => s.id)
        .join(
          ', ',
        )}${outside.length > 3 ? ', …' : ''}); nothing was computed or sent. Extend the allow-list or use a method that discloses no Grams`,
      { facts: { violations: outside.length, first: outside[0]!.id } },
    );
  }
}

/** Policy checks after collection: every Gram from at least `minRowsPerGroup` rows. Throws POLICY_VIOLATION. */
export function checkPolicyAfterCollection(plan: DisclosurePlan, rows: Readonly<Record<string, number>>): DisclosurePlan {
  const statistics = plan.statistics.map((s) => {
    const id = parseStatisticId(s.id);
    return id.kind === 'gram' || id.kind === 'rows' ? { ...s, rows: rows[id.group] ?? 0 } : s;
  });
  const few = statistics.filter((s) => s.kind === 'gram' && (s.rows ?? 0) < plan.policy.minRowsPerGroup);
  if (few.length > 0) {
    throw new GramfuseError(
      ErrorCode.PolicyViolation,
      `policy: ${few.length} Gram statistics come from fewer than ${plan.policy.minRowsPerGroup} rows (${few
        .slice(0, 3)
        .map((s) => `${s.id}: ${s.rows} rows`)
        .join(', ')}); such a Gram says too much about individual examples, so nothing was sent. Add data or lower --min-rows deliberately`,
      { facts: { violations: few.length, minRows: plan.policy.minRowsPerGroup, first: few[0]!.id } },
    );
  }
  return { ...plan, statistics };
}

/** The contribution's tensors under the plan's ids, converted to each statistic's dtype. */
export function contributionTensors(plan: DisclosurePlan, contribution: Contribution): Map<string, Float32Array | Float64Array> {
  const out = new Map<string, Float32Array | Float64Array>();
  for (const s of plan.statistics) {
    const id = parseStatisticId(s.id);
    const count = (n: number | undefined): Float64Array | undefined => (n === undefined ? undefined : Float64Array.of(n));
    const values =
      id.kind === 'gram'
        ? contribution.grams.get(id.group)
        : id.kind === 'gram_times_weight'
          ? contribution.gramTimesWeight.get(id.weight)
          : id.kind === 'diag_times_weight'
            ? contribution.diagTimesWeight?.get(id.weight)
            : id.kind === 'parameter'
              ? contribution.parameters.get(id.parameter)
              : id.kind === 'rows'
                ? count(contribution.rows[id.group])
                : count(contribution[id.count]);
    if (values === undefined) throw new GramfuseError(ErrorCode.Internal, `statistic ${s.id} is in the plan but not in the contribution`);
    out.set(s.id, s.dtype === 'float32' ? Float32Array.from(values) : values);
  }
  return out;
}
