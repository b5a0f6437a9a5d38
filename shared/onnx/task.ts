import type { GraphIndex } from './graph-index.js';

/**
 * What the model's first output is. A causal LM's is `[batch, sequence, vocab]` logits where vocab is the row count
 * of the token embedding gathered by a graph input (the token ids) (so a token classifier, `[batch, sequence, labels]`, is not
 * one); anything else is read as a classifier's `[batch, classes]` logits.
 */
export type ModelTask =
  | { readonly kind: 'causal-lm'; readonly output: string; readonly vocab: number; readonly embedding: string }
  | { readonly kind: 'classifier'; readonly output: string };

export function modelTask(index: GraphIndex): ModelTask {
  const output = index.graph.output[0];
  const name = output?.name ?? '';
  const dims = output?.type?.tensorType?.shape?.dim ?? [];
  const last = dims.at(-1)?.dimValue;
  if (dims.length === 3 && last !== undefined) {
    const inputs = new Set(index.graph.input.map((input) => input.name ?? ''));
    for (const node of index.graph.node) {
      if (node.opType !== 'Gather' || !inputs.has(node.input[1] ?? '')) continue;
      const table = index.initializers.get(node.input[0] ?? '');
      if (table?.dims.length === 2 && table.dims[0] === last)
        return { kind: 'causal-lm', output: name, vocab: Number(last), embedding: table.name ?? '' };
    }
  }
  return { kind: 'classifier', output: name };
}
