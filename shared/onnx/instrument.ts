import { AttributeProto, NodeProto, TensorProto, ValueInfoProto } from '../../proto/index.js';
import type { GramGroup } from './gram-groups.js';
import type { OnnxModel } from './model-io.js';
import type { RowRule } from './probe.js';
import { pruneToOutputs } from './prune.js';

/** Names of the extra outputs the instrumented graph adds for one Gram group. */
export interface GramOutputs {
  readonly group: string;
  /** float32 [inDim, inDim]: Σ over masked rows of xxᵀ for this batch. */
  readonly gram: string;
  /** int64 scalar: rows that entered the Gram in this batch. */
  readonly rows: string;
}

export interface InstrumentOptions {
  /** Count padding tokens too (the reference code's behaviour). Default false: padding never enters a Gram. */
  readonly includePadding?: boolean;
  /**
   * Keep only the Gram outputs and what they depend on (shared/onnx/prune.ts): the model's own outputs and every
   * node after the last Gram input are dropped, so a causal LM's full-vocabulary logits are never computed.
   * @default false (the model's outputs stay beside the Gram outputs)
   */
  readonly gramOutputsOnly?: boolean;
}

export interface InstrumentedModel {
  readonly model: OnnxModel;
  readonly outputs: readonly GramOutputs[];
}

const FLOAT = 1;
const INT64 = 7;
const PREFIX = 'gramfuse';

/**
 * Adds, per Gram group, `G = (m⊙X)ᵀX` over the flattened rows of every input tensor of the group (summed)
 * and its row count, as extra graph outputs; the original outputs stay unless `gramOutputsOnly`. The O(rows·in²) work thus runs
 * inside onnxruntime, on whatever device the session uses.
 */
export function instrumentGrams(
  model: OnnxModel,
  groups: readonly GramGroup[],
  rules: ReadonlyMap<string, RowRule>,
  options: InstrumentOptions = {},
): InstrumentedModel {
  const graph = model.proto.graph!;
  const nodes: NodeProto[] = [];
  const initializers: TensorProto[] = [];
  const outputs: ValueInfoProto[] = [];
  const produced: GramOutputs[] = [];
  const node = (opType: string, inputs: string[], output: string, attribute: NodeProto['attribute'] = []): string => {
    nodes.push(NodeProto.fromPartial({ opType, input: inputs, output: [output], name: output, attribute }));
    return output;
  };
  const int64Constant = (name: string, values: number[], dims: number[]): string => {
    initializers.push(
      TensorProto.fromPartial({
        name,
        dataType: INT64,
        dims: dims.map(BigInt),
        rawData: new Uint8Array(BigInt64Array.from(values, BigInt).buffer),
      }),
    );
    return name;
  };
  const intAttr = (name: string, value: number): AttributeProto => AttributeProto.fromPartial({ name, type: 2, i: BigInt(value) });

  const column = int64Constant(`${PREFIX}/shape/column`, [-1, 1], [2]);
  const zero = int64Constant(`${PREFIX}/index/zero`, [0], []);
  const masks = new Map<string, { column: string; rows: string }>();
  const maskParts = (mask: string): { column: string; rows: string } => {
    let parts = masks.get(mask);
    if (parts === undefined) {
      const asFloat = node('Cast', [mask], `${PREFIX}/mask/${mask}/float`, [intAttr('to', FLOAT)]);
      const asInt = node('Cast', [mask], `${PREFIX}/mask/${mask}/int64`, [intAttr('to', INT64)]);
      parts = {
        column: node('Reshape', [asFloat, column], `${PREFIX}/mask/${mask}/column`),
        rows: node('ReduceSum', [asInt], `${PREFIX}/mask/${mask}/rows`, [intAttr('keepdims', 0)]),
      };
      masks.set(mask, parts);
    }
    return parts;
  };
  const flatShapes = new Map<number, string>();
  const flatShape = (inDim: number): string => {
    let name = flatShapes.get(inDim);
    if (name === undefined) flatShapes.set(inDim, (name = int64Constant(`${PREFIX}/shape/rows_by_${inDim}`, [-1, inDim], [2])));
    return name;
  };
  const perTensor = new Map<string, { gram: string; rows: string }>();

  for (const group of groups) {
    const parts: { gram: string; rows: string }[] = [];
    for (const tensor of group.inputs) {
      let part = perTensor.get(tensor);
      if (part === undefined) {
        const base = `${PREFIX}/x/${tensor}`;
        const asFloat = node('Cast', [tensor], `${base}/float`, [intAttr('to', FLOAT)]);
        const flat = node('Reshape', [asFloat, flatShape(group.inDim)], `${base}/rows`);
        const rule = rules.get(tensor);
        const mask = options.includePadding === true ? null : rule?.rows === 'tokens' ? rule.mask : null;
        if (mask !== null) {
          const { column: m, rows } = maskParts(mask);
          const masked = node('Mul', [flat, m], `${base}/masked`);
          part = { gram: node('Gemm', [masked, flat], `${base}/gram`, [intAttr('transA', 1)]), rows };
        } else {
          const shape = node('Shape', [flat], `${base}/shape`);
          part = {
            gram: node('Gemm', [flat, flat], `${base}/gram`, [intAttr('transA', 1)]),
            rows: node('Gather', [shape, zero], `${base}/count`, [intAttr('axis', 0)]),
          };
        }
        perTensor.set(tensor, part);
      }
      parts.push(part);
    }
    const gramName = `${PREFIX}.gram.${group.id}`;
    const rowsName = `${PREFIX}.rows.${group.id}`;
    sumInto(
      parts.map((p) => p.gram),
      gramName,
      node,
    );
    sumInto(
      parts.map((p) => p.rows),
      rowsName,
      node,
    );
    outputs.push(tensorOutput(gramName, FLOAT, [group.inDim, group.inDim]), tensorOutput(rowsName, INT64, []));
    produced.push({ group: group.id, gram: gramName, rows: rowsName });
  }

  const extended = {
    ...graph,
    node: [...graph.node, ...nodes],
    initializer: [...graph.initializer, ...initializers],
    output: [...graph.output, ...outputs],
  };
  return {
    model: { ...model, proto: { ...model.proto, graph: options.gramOutputsOnly === true ? pruneToOutputs(extended, outputs) : extended } },
    outputs: produced,
  };
}

function sumInto(parts: readonly string[], output: string, node: (op: string, inputs: string[], output: string) => string): void {
  if (parts.length === 1) {
    node('Identity', [parts[0]!], output);
    return;
  }
  let acc = parts[0]!;
  for (let i = 1; i < parts.length; i++) acc = node('Add', [acc, parts[i]!], i === parts.length - 1 ? output : `${output}/partial${i}`);
}

function tensorOutput(name: string, elemType: number, dims: number[]): ValueInfoProto {
  return ValueInfoProto.fromPartial({
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => ({ dimValue: BigInt(d) })) } } },
  });
}
