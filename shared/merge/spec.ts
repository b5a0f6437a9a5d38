import { z } from 'zod';

/** Merge methods over the statistics contract (DESIGN.md §3). */
export const MergeMethod = z.enum(['regmean', 'average', 'task-arithmetic', 'ties']);
export type MergeMethod = z.infer<typeof MergeMethod>;

/** How owners count: `equal` (each Gram divided by its rows; every owner counts the same, as the reference code) or `tokens` (raw sums, the paper's formula). */
export const Weighting = z.enum(['equal', 'tokens']);
export type Weighting = z.infer<typeof Weighting>;

/** Parameters of one merge. Every field has a default and a description. */
export const MergeSpec = z
  .object({
    method: MergeMethod.default('regmean').describe('merge method'),
    alpha: z
      .number()
      .min(0)
      .max(1)
      .default(0.9)
      .describe('RegMean: G̃ = αG + (1−α)diag(G); 1 is plain least squares, 0 a per-feature weighted average'),
    alphaCandidates: z
      .array(z.number().min(0).max(1))
      .min(1)
      .optional()
      .describe(
        'RegMean, α chosen after the statistics: the candidates solved from one set of sums and scored on validation data. When set, owners send α-free statistics (G, G·B and diag(G)·B per weight; DESIGN.md §3) and `alpha` names the chosen one. Default: unset (α fixed before collection)',
      ),
    weighting: Weighting.default('equal').describe('equal: each owner counts the same; tokens: owners weighted by rows (the paper)'),
    includePadding: z.boolean().default(false).describe('count padding tokens in Grams (the reference code does); default excludes them'),
    lambda: z.number().min(0).optional().describe('task arithmetic / TIES scaling; defaults 0.3 and 1.0'),
    tiesK: z.number().gt(0).max(1).default(0.2).describe('TIES: fraction of each task vector kept (largest magnitudes)'),
    head: z
      .enum(['average', 'method'])
      .optional()
      .describe(
        "the output head (last linear layer and its bias): merged by the method, or averaged. Default: averaged for task arithmetic and TIES (the base model's head is an untrained initialisation, so a task vector from it means little), the method otherwise",
      ),
  })
  .strict();
export type MergeSpec = z.infer<typeof MergeSpec>;
export type MergeSpecInput = z.input<typeof MergeSpec>;

/** The default grid of α-auto (issue #43): where RegMean's accuracy moves on label-skew-v1 (0.1 … 1.0). */
export const DEFAULT_ALPHA_GRID: readonly number[] = [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0];

/** Whether the statistics are α-free (G, G·B, diag(G)·B) so that any α can be solved from their sums. */
export function alphaAfterStatistics(spec: MergeSpec): boolean {
  return spec.method === 'regmean' && spec.alphaCandidates !== undefined;
}

/** The α an owner's G̃ is formed with: the job's α, or 1 (G itself) when α is chosen after the statistics. */
export function statisticsAlpha(spec: MergeSpec): number {
  return alphaAfterStatistics(spec) ? 1 : spec.alpha;
}

export function needsBase(method: MergeMethod): boolean {
  return method === 'task-arithmetic' || method === 'ties';
}

export function defaultLambda(method: MergeMethod): number {
  return method === 'ties' ? 1.0 : 0.3;
}

/** Whether the output head is averaged rather than merged by the method. */
export function headIsAveraged(spec: MergeSpec): boolean {
  return (spec.head ?? (spec.method === 'task-arithmetic' || spec.method === 'ties' ? 'average' : 'method')) === 'average';
}
