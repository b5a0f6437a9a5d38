import type { NodeProto, TensorProto } from '../../proto/index.js';
import { dtypeFromOnnx } from '../dtypes.js';
import { attributeInt, attributeInts, type GraphIndex } from './graph-index.js';

/**
 * How a linear layer's weight is stored. `in_out`: the initializer is B ∈ ℝ^{in×out} (y = xB, MatMul,
 * GPT-2 Conv1D). `out_in`: it is W = Bᵀ ∈ ℝ^{out×in} (Gemm transB=1, MatMul through a Transpose).
 */
export type Orientation = 'in_out' | 'out_in';

/** One use of a weight as y = xB (+b). A weight used by several nodes has one LinearUse each. */
export interface LinearUse {
  readonly node: string;
  readonly input: string;
}

/** A linear layer: a rank-2 float initializer used only as the right operand of MatMul/Gemm. */
export interface LinearLayer {
  readonly weight: string;
  readonly orientation: Orientation;
  readonly inDim: number;
  readonly outDim: number;
  /** A rank-1 initializer added right after (Gemm's C or a following Add), or null. */
  readonly bias: string | null;
  /** Every node that applies this weight, with the activation tensor it reads. */
  readonly uses: readonly LinearUse[];
}

/** Something the analysis chose not to guess about; the parameter is averaged instead. */
export interface AnalysisNote {
  readonly tensor: string;
  readonly reason: string;
}

export interface LinearLayerScan {
  readonly layers: LinearLayer[];
  readonly notes: AnalysisNote[];
}

const passThrough = new Set(['Identity']);

/** Follows Identity (and one Transpose of a rank-2 initializer) back from `name` to an initializer. */
function traceToInitializer(index: GraphIndex, name: string): { tensor: TensorProto; transposed: boolean; path: NodeProto[] } | undefined {
  const path: NodeProto[] = [];
  let transposed = false;
  let current = name;
  for (let depth = 0; depth < 8; depth++) {
    const tensor = index.initializers.get(current);
    if (tensor !== undefined && index.producers.get(current) === undefined) return { tensor, transposed, path };
    const producer = index.producers.get(current);
    if (producer === undefined) return undefined;
    if (passThrough.has(producer.opType ?? '')) {
      path.push(producer);
      current = producer.input[0] ?? '';
      continue;
    }
    if (producer.opType === 'Transpose' && !transposed) {
      const perm = attributeInts(producer, 'perm');
      if (perm !== undefined && !(perm.length === 2 && perm[0] === 1 && perm[1] === 0)) return undefined;
      transposed = true;
      path.push(producer);
      current = producer.input[0] ?? '';
      continue;
    }
    return undefined;
  }
  return undefined;
}

function isFloatMatrix(tensor: TensorProto): boolean {
  return tensor.dims.length === 2 && dtypeFromOnnx(tensor.dataType ?? 0, tensor.name ?? '?').float;
}

function isRank1Float(tensor: TensorProto | undefined): tensor is TensorProto {
  return tensor !== undefined && tensor.dims.length === 1 && dtypeFromOnnx(tensor.dataType ?? 0, tensor.name ?? '?').float;
}

interface Candidate {
  readonly node: NodeProto;
  readonly input: string;
  readonly weight: TensorProto;
  readonly orientation: Orientation;
  readonly bias: string | null;
  readonly path: readonly NodeProto[];
}

/** Finds every linear layer (DESIGN.md §2) and notes what it declined to treat as one. */
export function findLinearLayers(index: GraphIndex): LinearLayerScan {
  const notes: AnalysisNote[] = [];
  const candidates: Candidate[] = [];
  for (const node of index.graph.node) {
    const op = node.opType ?? '';
    if ((node.domain ?? '') !== '' && node.domain !== 'ai.onnx') continue;
    if (op !== 'MatMul' && op !== 'Gemm') continue;
    const [a, b] = node.input;
    if (a === undefined || b === undefined) continue;
    const right = traceToInitializer(index, b);
    const left = traceToInitializer(index, a);
    if (right === undefined) {
      if (left !== undefined && isFloatMatrix(left.tensor)) {
        notes.push({
          tensor: left.tensor.name ?? '',
          reason: `${op} ${node.name ?? ''} multiplies it from the left (W·X); not a linear layer gramfuse can merge by RegMean, averaged`,
        });
      }
      continue;
    }
    if (!isFloatMatrix(right.tensor)) continue;
    if (left !== undefined) continue; // a product of two constants: structure, not a layer
    let orientation: Orientation = right.transposed ? 'out_in' : 'in_out';
    let bias: string | null = null;
    if (op === 'Gemm') {
      if (attributeInt(node, 'transA', 0) !== 0) {
        notes.push({ tensor: right.tensor.name ?? '', reason: `Gemm ${node.name ?? ''} has transA=1 (rows are columns); averaged` });
        continue;
      }
      if (attributeInt(node, 'transB', 0) === 1) orientation = orientation === 'in_out' ? 'out_in' : 'in_out';
      const c = node.input[2];
      if (c !== undefined && c !== '') {
        const cTensor = traceToInitializer(index, c);
        if (cTensor !== undefined && isRank1Float(cTensor.tensor)) bias = cTensor.tensor.name ?? null;
      }
    } else {
      bias = followingBias(index, node);
    }
    candidates.push({ node, input: a, weight: right.tensor, orientation, bias, path: right.path });
  }

  // A weight qualifies only when every use of it is as the right operand of a linear node with one
  // orientation; a tied weight (e.g. embeddings reused as the output projection) is averaged.
  const byWeight = new Map<string, Candidate[]>();
  for (const candidate of candidates) {
    const name = candidate.weight.name ?? '';
    let list = byWeight.get(name);
    if (list === undefined) byWeight.set(name, (list = []));
    list.push(candidate);
  }
  const layers: LinearLayer[] = [];
  for (const [name, uses] of byWeight) {
    const first = uses[0]!;
    const linearNodes = new Set<NodeProto>([...uses.map((u) => u.node), ...uses.flatMap((u) => u.path)]);
    const otherUse = allUses(index, name).find((node) => !linearNodes.has(node));
    if (otherUse !== undefined) {
      notes.push({
        tensor: name,
        reason: `used as a linear weight and also by ${otherUse.opType ?? '?'} ${otherUse.name ?? ''} (tied parameter); averaged`,
      });
      continue;
    }
    if (index.graphOutputs.has(name)) {
      notes.push({ tensor: name, reason: 'also a graph output; averaged' });
      continue;
    }
    if (uses.some((u) => u.orientation !== first.orientation)) {
      notes.push({ tensor: name, reason: 'applied in both orientations by different nodes; averaged' });
      continue;
    }
    const dims = first.weight.dims.map(Number);
    const [inDim, outDim] = first.orientation === 'in_out' ? [dims[0]!, dims[1]!] : [dims[1]!, dims[0]!];
    const biases = new Set(uses.map((u) => u.bias));
    layers.push({
      weight: name,
      orientation: first.orientation,
      inDim,
      outDim,
      bias: biases.size === 1 ? first.bias : null,
      uses: uses.map((u) => ({ node: u.node.name ?? '', input: u.input })),
    });
  }
  return { layers, notes };
}

/** Every node that reads `name` directly or through Identity/Transpose chains. */
function allUses(index: GraphIndex, name: string): NodeProto[] {
  const out: NodeProto[] = [];
  const queue = [name];
  const seen = new Set<string>();
  while (queue.length > 0) {
    const current = queue.pop()!;
    if (seen.has(current)) continue;
    seen.add(current);
    for (const node of index.consumers.get(current) ?? []) {
      out.push(node);
      if (node.opType === 'Identity' || node.opType === 'Transpose') queue.push(...node.output);
    }
  }
  return out;
}

/** The rank-1 initializer of an Add that is the MatMul output's only consumer, if any. */
function followingBias(index: GraphIndex, node: NodeProto): string | null {
  const output = node.output[0];
  if (output === undefined) return null;
  const consumers = index.consumers.get(output) ?? [];
  if (consumers.length !== 1 || index.graphOutputs.has(output)) return null;
  const add = consumers[0]!;
  if (add.opType !== 'Add') return null;
  const other = add.input[0] === output ? add.input[1] : add.input[0];
  if (other === undefined) return null;
  const traced = traceToInitializer(index, other);
  if (traced === undefined || traced.transposed || !isRank1Float(traced.tensor)) return null;
  return traced.tensor.name ?? null;
}
