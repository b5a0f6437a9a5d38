import { AttributeProto, NodeProto, TensorProto, ValueInfoProto } from '../../proto/index.js';
import type { GramGroup } from './gram-groups.js';
import type { OnnxModel } from './model-io.js';
import type { RowRule } from './probe.js';
import { pruneToOutputs } from './prune.js';

/**
 * One output of a Gram's upper block triangle: float32 [height, n − firstRow], rows firstRow … firstRow + height − 1
 * of the batch's Gram from column firstRow on (the rest of those rows is the mirror of blocks above).
 */
export interface GramBlock {
  readonly output: string;
  readonly firstRow: number;
  readonly height: number;
}

/** Names of the extra outputs the instrumented graph adds for one Gram group. */
export interface GramOutputs {
  readonly group: string;
  /** The Gram's order (the group's input width). */
  readonly n: number;
  /** Σ over masked rows of xxᵀ for this batch, as the row bands of its upper block triangle (one band: the whole Gram). */
  readonly blocks: readonly GramBlock[];
  /** int64 scalar: rows that entered the Gram in this batch. */
  readonly rows: string;
}

/**
 * The row bands a Gram of order n is computed in: one below n = 256 (a smaller product gains nothing), else
 * ⌊n/128⌋ bands up to 16. Band i multiplies its columns of the masked rows by columns i·b… of the rows, so only the
 * upper block triangle is computed: (k+1)/2k of the full product's multiply-adds (k = 4: 62 %, 16: 53 %). On these
 * 2 cores (onnxruntime float32 Gemm, 3072 rows): n = 512 8.9 → 7.4 ms, 1024 38 → 27 ms, 3072 363 → 218 ms.
 */
export function gramBands(n: number): { firstRow: number; height: number }[] {
  const k = n < 256 ? 1 : Math.min(16, Math.floor(n / 128));
  const height = Math.ceil(n / k);
  const bands: { firstRow: number; height: number }[] = [];
  for (let firstRow = 0; firstRow < n; firstRow += height) bands.push({ firstRow, height: Math.min(height, n - firstRow) });
  return bands;
}

/** The full symmetric Gram (float64) from one batch's blocks, `read` giving each block output's values. */
export function assembleGram(outputs: GramOutputs, read: (output: string) => Float32Array): Float64Array {
  const { n } = outputs;
  const gram = new Float64Array(n * n);
  for (const { output, firstRow, height } of outputs.blocks) {
    const values = read(output);
    const width = n - firstRow;
    for (let r = 0; r < height; r++) {
      const row = firstRow + r;
      for (let c = r; c < width; c++) gram[row * n + firstRow + c] = gram[(firstRow + c) * n + row] = values[r * width + c]!;
    }
  }
  return gram;
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
  // Split takes its sizes as an input from opset 13 on, as an attribute before.
  const opset = Number(model.proto.opsetImport.find((o) => o.domain === '' || o.domain === 'ai.onnx')?.version ?? 13n);
  const splitSizes = new Map<number, string>();
  /** The column blocks of a [rows, n] tensor, one output each (one copy of the tensor in all). */
  const splitColumns = (input: string, n: number, bands: readonly { height: number }[], base: string): string[] => {
    const heights = bands.map((b) => b.height);
    const outputs = bands.map((_, i) => `${base}/block${i}`);
    const axis = intAttr('axis', 1);
    if (opset >= 13) {
      let sizes = splitSizes.get(n);
      if (sizes === undefined) splitSizes.set(n, (sizes = int64Constant(`${PREFIX}/split/${n}`, heights, [heights.length])));
      nodes.push(
        NodeProto.fromPartial({ opType: 'Split', input: [input, sizes], output: outputs, name: `${base}/split`, attribute: [axis] }),
      );
    } else {
      const split = AttributeProto.fromPartial({ name: 'split', type: 7, ints: heights.map(BigInt) });
      nodes.push(
        NodeProto.fromPartial({ opType: 'Split', input: [input], output: outputs, name: `${base}/split`, attribute: [axis, split] }),
      );
    }
    return outputs;
  };
  const perTensor = new Map<string, { bands: string[]; rows: string }>();

  for (const group of groups) {
    const bands = gramBands(group.inDim);
    const parts: { bands: string[]; rows: string }[] = [];
    for (const tensor of group.inputs) {
      let part = perTensor.get(tensor);
      if (part === undefined) {
        const base = `${PREFIX}/x/${tensor}`;
        const asFloat = node('Cast', [tensor], `${base}/float`, [intAttr('to', FLOAT)]);
        const flat = node('Reshape', [asFloat, flatShape(group.inDim)], `${base}/rows`);
        const rule = rules.get(tensor);
        const mask = options.includePadding === true ? null : rule?.rows === 'tokens' ? rule.mask : null;
        const maskColumn = mask === null ? null : maskParts(mask).column;
        // X's column blocks X₀ … X_{k−1} (one band: X itself; several: one Split copies X once — onnxruntime's Gemm
        // cannot read a column block in place, and a Slice per band operand copied it (k + 1)/2 times); band i is
        // [(m ⊙ Xᵢ)ᵀ Xᵢ, (m ⊙ Xᵢ)ᵀ Xᵢ₊₁, …] side by side, so one band is (m ⊙ X)ᵀ X.
        const blocks = bands.length === 1 ? [flat] : splitColumns(flat, group.inDim, bands, base);
        const gemms = bands.map((_, i) => {
          const left = maskColumn === null ? blocks[i]! : node('Mul', [blocks[i]!, maskColumn], `${base}/block${i}/masked`);
          const products = blocks
            .slice(i)
            .map((right, j) => node('Gemm', [left, right], `${base}/band${i}/block${i + j}`, [intAttr('transA', 1)]));
          return products.length === 1 ? products[0]! : node('Concat', products, `${base}/band${i}/gram`, [intAttr('axis', 1)]);
        });
        if (mask !== null) part = { bands: gemms, rows: maskParts(mask).rows };
        else {
          const shape = node('Shape', [flat], `${base}/shape`);
          part = { bands: gemms, rows: node('Gather', [shape, zero], `${base}/count`, [intAttr('axis', 0)]) };
        }
        perTensor.set(tensor, part);
      }
      parts.push(part);
    }
    const rowsName = `${PREFIX}.rows.${group.id}`;
    const blocks = bands.map(({ firstRow, height }, i) => {
      const output = bands.length === 1 ? `${PREFIX}.gram.${group.id}` : `${PREFIX}.gram.${group.id}.band${i}`;
      sumInto(
        parts.map((p) => p.bands[i]!),
        output,
        node,
      );
      outputs.push(tensorOutput(output, FLOAT, [height, group.inDim - firstRow]));
      return { output, firstRow, height };
    });
    sumInto(
      parts.map((p) => p.rows),
      rowsName,
      node,
    );
    outputs.push(tensorOutput(rowsName, INT64, []));
    produced.push({ group: group.id, n: group.inDim, blocks, rows: rowsName });
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
