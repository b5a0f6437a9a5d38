import type { GraphProto, NodeProto, TensorProto } from '../../proto/index.js';

/** Who produces and who consumes each tensor of a graph, and which names are initializers. */
export interface GraphIndex {
  readonly graph: GraphProto;
  readonly initializers: ReadonlyMap<string, TensorProto>;
  readonly producers: ReadonlyMap<string, NodeProto>;
  readonly consumers: ReadonlyMap<string, readonly NodeProto[]>;
  readonly graphOutputs: ReadonlySet<string>;
}

export function indexGraph(graph: GraphProto): GraphIndex {
  const initializers = new Map<string, TensorProto>();
  for (const tensor of graph.initializer) initializers.set(tensor.name ?? '', tensor);
  const producers = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  for (const node of graph.node) {
    for (const output of node.output) if (output !== '') producers.set(output, node);
    for (const input of node.input) {
      if (input === '') continue;
      let list = consumers.get(input);
      if (list === undefined) consumers.set(input, (list = []));
      list.push(node);
    }
  }
  // Subgraphs (If/Loop/Scan bodies) may read outer tensors by name without listing them as inputs.
  for (const node of graph.node) {
    for (const attribute of node.attribute) {
      for (const sub of [...(attribute.g === undefined ? [] : [attribute.g]), ...attribute.graphs]) {
        for (const name of outerReferences(sub)) {
          let list = consumers.get(name);
          if (list === undefined) consumers.set(name, (list = []));
          list.push(node);
        }
      }
    }
  }
  return { graph, initializers, producers, consumers, graphOutputs: new Set(graph.output.map((o) => o.name ?? '')) };
}

function outerReferences(graph: GraphProto): Set<string> {
  const local = new Set<string>([...graph.input.map((i) => i.name ?? ''), ...graph.initializer.map((t) => t.name ?? '')]);
  for (const node of graph.node) for (const output of node.output) local.add(output);
  const refs = new Set<string>();
  for (const node of graph.node) for (const input of node.input) if (input !== '' && !local.has(input)) refs.add(input);
  return refs;
}

export function attributeInt(node: NodeProto, name: string, fallback: number): number {
  const attribute = node.attribute.find((a) => a.name === name);
  return attribute?.i === undefined ? fallback : Number(attribute.i);
}

export function attributeFloat(node: NodeProto, name: string, fallback: number): number {
  const attribute = node.attribute.find((a) => a.name === name);
  return attribute?.f ?? fallback;
}

export function attributeInts(node: NodeProto, name: string): number[] | undefined {
  const attribute = node.attribute.find((a) => a.name === name);
  return attribute === undefined ? undefined : attribute.ints.map(Number);
}
