// The solver's kernels as onnxruntime float64 graphs (built here as ONNX protobuf, never files), and the tensors
// and Slice-bound feeds they take. ort-solver.ts creates the sessions; blocked-cholesky.ts runs them.
import { AttributeProto, GraphProto, ModelProto, NodeProto, ValueInfoProto } from '../../proto/index.js';
import { OrtTensor, type Tensor } from '../onnx/runtime.js';

const DOUBLE = 11;
const INT64 = 7;

interface KernelNode {
  readonly op: 'Gemm' | 'MatMul' | 'Slice' | 'Trilu' | 'Concat';
  readonly inputs: string[];
  readonly output: string;
  readonly ints?: Readonly<Record<string, number>>;
  readonly floats?: Readonly<Record<string, number>>;
}

/** A float64 graph; inputs named `i_*` are int64 index vectors (Slice starts/ends, Trilu k). */
function kernelModel(inputs: string[], nodes: KernelNode[], output: string): Uint8Array {
  const value = (name: string): ValueInfoProto =>
    ValueInfoProto.fromPartial({
      name,
      type: {
        tensorType: name.startsWith('i_')
          ? { elemType: INT64, shape: { dim: [{ dimParam: `${name}_len` }] } }
          : { elemType: DOUBLE, shape: { dim: [{ dimParam: `${name}_rows` }, { dimParam: `${name}_cols` }] } },
      },
    });
  const graph = GraphProto.fromPartial({
    name: 'gramfuse_kernel',
    node: nodes.map((n) =>
      NodeProto.fromPartial({
        opType: n.op,
        input: n.inputs,
        output: [n.output],
        name: n.output,
        attribute: [
          ...Object.entries(n.ints ?? {}).map(([name, v]) => AttributeProto.fromPartial({ name, type: 2, i: BigInt(v) })),
          ...Object.entries(n.floats ?? {}).map(([name, v]) => AttributeProto.fromPartial({ name, type: 1, f: v })),
        ],
      }),
    ),
    input: inputs.map(value),
    output: [ValueInfoProto.fromPartial({ name: output, type: { tensorType: { elemType: DOUBLE } } })],
  });
  return ModelProto.encode(ModelProto.fromPartial({ irVersion: 8n, opsetImport: [{ domain: '', version: 17n }], graph })).finish();
}

const slice = (output: string, data: string, bounds: string): KernelNode => ({
  op: 'Slice',
  inputs: [data, `i_${bounds}_s`, `i_${bounds}_e`],
  output,
});
const bounds = (...names: string[]): string[] => names.flatMap((n) => [`i_${n}_s`, `i_${n}_e`]);
const minusProduct = { floats: { alpha: -1, beta: 1 } };

/**
 * The native kernels of the solver: onnxruntime graphs run by MLAS (a CUDA EP could run them too).
 * The whole matrix goes in as one input (onnxruntime-node passes inputs without copying) and is sliced
 * inside the graph, so no strided copies are made in JavaScript.
 */
export const kernels = {
  // Y = C − P·Pᵀ with P = A[j0:j1, 0:j0], C = A[j0:j1, j0:j1] (diagonal block update)
  syrk: kernelModel(
    ['A', ...bounds('P', 'C')],
    [
      slice('P', 'A', 'P'),
      slice('C', 'A', 'C'),
      { op: 'Gemm', inputs: ['P', 'P', 'C'], output: 'Y', ints: { transB: 1 }, ...minusProduct },
    ],
    'Y',
  ),
  // L21 = (C2 − P2·P1ᵀ)·Linvᵀ (panel update and triangular solve)
  panel: kernelModel(
    ['A', 'Linv', ...bounds('P2', 'P1', 'C2')],
    [
      slice('P2', 'A', 'P2'),
      slice('P1', 'A', 'P1'),
      slice('C2', 'A', 'C2'),
      { op: 'Gemm', inputs: ['P2', 'P1', 'C2'], output: 'Z', ints: { transB: 1 }, ...minusProduct },
      { op: 'Gemm', inputs: ['Z', 'Linv'], output: 'L21', ints: { transB: 1 } },
    ],
    'L21',
  ),
  // L21 = C2·Linvᵀ (first block column)
  scale: kernelModel(
    ['A', 'Linv', ...bounds('C2')],
    [slice('C2', 'A', 'C2'), { op: 'Gemm', inputs: ['C2', 'Linv'], output: 'L21', ints: { transB: 1 } }],
    'L21',
  ),
  // Yk = Linv·(Rk − Lrow·Y[0:j0]) (forward substitution, one block row). Y[0:j0] and X[j1:n] below are whole rows,
  // contiguous: they go in as views, not sliced inside the graph (a fresh copy of up to n×rhs float64 per block).
  forward: kernelModel(
    ['A', 'Yprev', 'Rk', 'Linv', ...bounds('L')],
    [
      slice('Lrow', 'A', 'L'),
      { op: 'Gemm', inputs: ['Lrow', 'Yprev', 'Rk'], output: 'Z', ...minusProduct },
      { op: 'MatMul', inputs: ['Linv', 'Z'], output: 'Yk' },
    ],
    'Yk',
  ),
  // Yk = Linv·Rk
  apply: kernelModel(['Linv', 'Rk'], [{ op: 'MatMul', inputs: ['Linv', 'Rk'], output: 'Yk' }], 'Yk'),
  // Xk = Linvᵀ·(Yk − Lcolᵀ·X[j1:n]) (back substitution, one block row)
  backward: kernelModel(
    ['A', 'Xafter', 'Yk', 'Linv', ...bounds('L')],
    [
      slice('Lcol', 'A', 'L'),
      { op: 'Gemm', inputs: ['Lcol', 'Xafter', 'Yk'], output: 'Z', ints: { transA: 1 }, ...minusProduct },
      { op: 'Gemm', inputs: ['Linv', 'Z'], output: 'Xk', ints: { transA: 1 } },
    ],
    'Xk',
  ),
  // Xk = Linvᵀ·Yk
  applyT: kernelModel(['Linv', 'Yk'], [{ op: 'Gemm', inputs: ['Linv', 'Yk'], output: 'Xk', ints: { transA: 1 } }], 'Xk'),
  // One block row of S·X, S = U + Uᵀ + diag(d), U the strict upper triangle of A (untouched by the
  // factorization): with B = A[j0:j1, j0:n] and Ub its part right of the diagonal, [Ub·X[j0:n]; Ubᵀ·X[j0:j1]] —
  // rows j0:j1 of U·X, then this block row's share of rows j0:n of Uᵀ·X. Never the whole U: a fresh n×n buffer per
  // solve cost more than the factorization at n = 3072 on a machine whose page faults are slow (bench/solve).
  residualRows: kernelModel(
    ['A', 'X', ...bounds('B', 'Xb', 'Xd'), 'i_k'],
    [
      slice('B', 'A', 'B'),
      { op: 'Trilu', inputs: ['B', 'i_k'], output: 'Ub', ints: { upper: 1 } },
      slice('Xb', 'X', 'Xb'),
      slice('Xd', 'X', 'Xd'),
      { op: 'MatMul', inputs: ['Ub', 'Xb'], output: 'UX' },
      { op: 'Gemm', inputs: ['Ub', 'Xd'], output: 'UtX', ints: { transA: 1 } },
      { op: 'Concat', inputs: ['UX', 'UtX'], output: 'Out', ints: { axis: 0 } },
    ],
    'Out',
  ),
} as const;

export type KernelName = keyof typeof kernels;

export const t64 = (data: Float64Array, rows: number, cols: number): Tensor => new OrtTensor('float64', data, [rows, cols]);
export const i64 = (...values: number[]): Tensor => new OrtTensor('int64', BigInt64Array.from(values, BigInt), [values.length]);
/** Slice bounds feeds for rows [r0, r1) × columns [c0, c1). */
export const region = (name: string, r0: number, r1: number, c0: number, c1: number): Record<string, Tensor> => ({
  [`i_${name}_s`]: i64(r0, c0),
  [`i_${name}_e`]: i64(r1, c1),
});

/** C = A·B in float64, for matmulNative. */
export const matmulKernel = kernelModel(['A', 'B'], [{ op: 'MatMul', inputs: ['A', 'B'], output: 'C' }], 'C');

/** A kernel graph of the solver, for probing an execution provider (resolveDevice) with the graphs it will run. */
export function solverProbeModel(): Uint8Array {
  return kernels.syrk;
}
