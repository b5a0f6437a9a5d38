// Collection under a memory budget: the Gram groups are split into passes over the data so that one pass's
// accumulators fit. More passes over the data is the price of less memory; the plan says how many.
import { freemem } from 'node:os';

import { ErrorCode, formatBytes, GramfuseError } from '../../shared/index.js';
import type { GramGroup } from '../../shared/onnx/index.js';

/** The groups collected together in one pass over the data, and the memory their accumulators take. */
export interface CollectionPass {
  readonly groups: readonly string[];
  readonly bytes: number;
}

/**
 * What one group holds while its pass runs: the float64 accumulator (8·n²) and onnxruntime's float32 output of the
 * batch's Gram (4·n²).
 */
export function passBytes(group: Pick<GramGroup, 'inDim'>): number {
  return 12 * group.inDim * group.inDim;
}

/** The default budget for one pass's accumulators: half of the memory free when the agent starts. */
export const DEFAULT_BUDGET_FRACTION = 0.5;
export function defaultMemoryBudget(): number {
  return Math.floor(freemem() * DEFAULT_BUDGET_FRACTION);
}

/**
 * Packs the groups, in the model's order, into as few passes as fit `budget` bytes each (order kept, so the bundle is
 * written front to back). A group that alone does not fit is RESOURCE_EXHAUSTED naming it and the budget it needs.
 */
export function planPasses(groups: readonly GramGroup[], budget: number): CollectionPass[] {
  const passes: { groups: string[]; bytes: number }[] = [];
  for (const group of groups) {
    const bytes = passBytes(group);
    if (bytes > budget)
      throw new GramfuseError(
        ErrorCode.ResourceExhausted,
        `Gram group ${group.id} (${group.weights[0]}…, n = ${group.inDim}) needs ${formatBytes(bytes)} of accumulators, more than the memory budget ${formatBytes(budget)}; raise --memory-budget to at least ${formatBytes(bytes)}`,
        { facts: { group: group.id, needed: bytes, budget } },
      );
    const last = passes.at(-1);
    if (last !== undefined && last.bytes + bytes <= budget) {
      last.groups.push(group.id);
      last.bytes += bytes;
    } else passes.push({ groups: [group.id], bytes });
  }
  return passes;
}

/** The agent's memory target (LLM-scale issue): one copy of the weights, 1.5 × the largest pass, and 500 MB. */
export function memoryTarget(modelBytes: number, passes: readonly CollectionPass[]): number {
  return modelBytes + 1.5 * Math.max(0, ...passes.map((p) => p.bytes)) + 500 * 2 ** 20;
}

/** One line for a person: how many passes over how many examples, and why. */
export function formatPasses(passes: readonly CollectionPass[], examples: number, budget: number): string {
  if (passes.length === 0) return 'no pass over the data (the method needs no Gram statistics)';
  const largest = Math.max(...passes.map((p) => p.bytes));
  return `${passes.length} ${passes.length === 1 ? 'pass' : 'passes'} over ${examples} examples (memory budget ${formatBytes(budget)}; largest pass ${formatBytes(largest)} of accumulators)`;
}
