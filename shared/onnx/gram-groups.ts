import type { LinearLayer } from './linear-layers.js';

/**
 * Linear layers that read the same activation tensor(s) share one Gram (q/k/v; gate/up). A weight
 * applied by several nodes to different tensors is fitted on all their rows: its group's Gram is the
 * sum of those tensors' Grams (DESIGN.md §2).
 */
export interface GramGroup {
  /** Stable id within the model, `g0`, `g1`, … in graph order. */
  readonly id: string;
  /** Activation tensors whose Grams are summed, in graph order. */
  readonly inputs: readonly string[];
  readonly inDim: number;
  /** Weights (initializer names) solved with this Gram. */
  readonly weights: readonly string[];
}

export function formGramGroups(layers: readonly LinearLayer[]): GramGroup[] {
  const groups = new Map<string, { inputs: string[]; inDim: number; weights: string[] }>();
  for (const layer of layers) {
    const inputs = [...new Set(layer.uses.map((use) => use.input))];
    const key = JSON.stringify([...inputs].sort());
    let group = groups.get(key);
    if (group === undefined) groups.set(key, (group = { inputs, inDim: layer.inDim, weights: [] }));
    group.weights.push(layer.weight);
  }
  return [...groups.values()].map((group, i) => ({ id: `g${i}`, ...group }));
}
