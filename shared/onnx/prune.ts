// Cutting a graph down to the outputs someone reads: the agent's instrumented graph keeps only its Gram outputs, so
// onnxruntime never computes (or allocates) what follows the last Gram input, such as full-vocabulary logits.
import type { GraphProto, NodeProto, ValueInfoProto } from '../../proto/index.js';

/** Every name a node reads, including names its subgraphs (If/Loop/Scan bodies) read from the outer scope. */
function reads(node: NodeProto): string[] {
  const names = node.input.filter((n) => n !== '');
  for (const attribute of node.attribute) {
    const graphs = [...(attribute.g === undefined ? [] : [attribute.g]), ...attribute.graphs];
    for (const graph of graphs) for (const inner of graph.node) names.push(...reads(inner));
  }
  return names;
}

/**
 * The graph with `outputs` as its only outputs and only the nodes and initializers they depend on. Inputs stay
 * (a session is fed the same inputs), even when no kept node reads them.
 */
export function pruneToOutputs(graph: GraphProto, outputs: readonly ValueInfoProto[]): GraphProto {
  const producer = new Map<string, number>();
  graph.node.forEach((node, i) => node.output.forEach((name) => producer.set(name, i)));
  const keep = new Set<number>();
  const needed = new Set<string>();
  const stack = outputs.map((o) => o.name ?? '');
  while (stack.length > 0) {
    const name = stack.pop()!;
    if (needed.has(name)) continue;
    needed.add(name);
    const i = producer.get(name);
    if (i === undefined || keep.has(i)) continue;
    keep.add(i);
    stack.push(...reads(graph.node[i]!));
  }
  return {
    ...graph,
    node: graph.node.filter((_, i) => keep.has(i)),
    initializer: graph.initializer.filter((t) => needed.has(t.name ?? '')),
    valueInfo: graph.valueInfo.filter((v) => needed.has(v.name ?? '')),
    output: [...outputs],
  };
}
