import { AttributeProto, GraphProto, ModelProto, NodeProto, ValueInfoProto } from '../../proto/index.js';
import { ErrorCode, GramfuseError } from '../errors.js';
import { createSession, type InferenceSession, OrtTensor, type SessionOptions, type Tensor } from '../onnx/runtime.js';
import { mirrorUpper } from './dense.js';

/** Diagnostics of one SPD solve (DESIGN.md §3: every layer gets them). */
export interface SolveDiagnostics {
  /** Diagonal jitter added, relative to the mean diagonal (0 when none was needed). */
  readonly jitter: number;
  /** (max Lᵢᵢ / min Lᵢᵢ)² of the Cholesky factor: a cheap lower bound on the 2-norm condition number. */
  readonly conditionEstimate: number;
  /** ‖A·X − R‖_F / ‖R‖_F over `residualColumns` right-hand sides (all when there are at most 16). */
  readonly relativeResidual: number;
  readonly residualColumns: number;
  readonly seconds: number;
}

export interface SolveResult extends SolveDiagnostics {
  /** X (n×r, row-major) with A·X = R. */
  readonly x: Float64Array;
}

/**
 * Solves A·X = R for symmetric positive (semi)definite A in float64 by Cholesky, never an explicit
 * inverse. Implementations may overwrite `a`'s lower triangle; its upper triangle and `r` are kept.
 */
export interface SpdSolver {
  readonly name: string;
  solve(a: Float64Array, n: number, r: Float64Array, rhs: number, label: string): Promise<SolveResult>;
  /**
   * ‖S·X − R‖_F / ‖R‖_F for S = U + Uᵀ + diag(`diagonal`), U the strict upper triangle of `a` (n×n; its diagonal
   * and lower triangle are not read), X and R n×rhs: the check `solve` reports as relativeResidual, against the
   * matrix it solved, on the right-hand sides it picks.
   */
  residual(a: Float64Array, n: number, x: Float64Array, r: Float64Array, rhs: number, diagonal: Float64Array): Promise<number>;
  release(): Promise<void>;
}

export interface OrtSolverOptions {
  /** Block size of the left-looking blocked Cholesky. @default 128 for n ≤ SMALL_SOLVE, 192 above (measured: bench/solve) */
  readonly blockSize?: number;
  /** onnxruntime intra-op threads. @default onnxruntime's choice (all cores) */
  readonly threads?: number;
  /** Jitter steps, relative to the mean diagonal, tried in order when A is not positive definite. @default DEFAULT_JITTER_STEPS */
  readonly jitterSteps?: readonly number[];
  /**
   * onnxruntime's memory arena (default on). The coordinator turns it off: its peak memory is then about one
   * Gram group's working set instead of the largest buffers ever allocated, at some speed (docs/BENCHMARKS.md).
   * Groups with n ≤ SMALL_SOLVE are solved on sessions of their own with the arena on whatever this says: what
   * their arena keeps is bounded by that size (a few n×n and n×rhs float64 buffers), and it is 1.3-1.5x faster there.
   * @default true
   */
  readonly memoryArena?: boolean;
  /** Where the kernels run: onnxruntime's CUDA provider (float64 Gemm/MatMul) or the CPU. @default cpu */
  readonly device?: 'cpu' | 'cuda';
}

/** Gram groups up to this size use the arena-on kernel sessions and the smaller block (see OrtSolverOptions). */
export const SMALL_SOLVE = 1024;

/** Values of the upper triangle one residual block slices out (8 MiB of float64). */
const RESIDUAL_SLICE = 2 ** 20;

const DOUBLE = 11;
const INT64 = 7;
export const DEFAULT_JITTER_STEPS = [1e-10, 1e-8, 1e-6, 1e-4, 1e-2] as const;

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
const kernels = {
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

type KernelName = keyof typeof kernels;

const t64 = (data: Float64Array, rows: number, cols: number): Tensor => new OrtTensor('float64', data, [rows, cols]);
const i64 = (...values: number[]): Tensor => new OrtTensor('int64', BigInt64Array.from(values, BigInt), [values.length]);
/** Slice bounds feeds for rows [r0, r1) × columns [c0, c1). */
const region = (name: string, r0: number, r1: number, c0: number, c1: number): Record<string, Tensor> => ({
  [`i_${name}_s`]: i64(r0, c0),
  [`i_${name}_e`]: i64(r1, c1),
});

/**
 * Σ x[xi + k]·y[yi + k] for k < length, in four partial sums: one running sum waits on each addition before the next
 * (floating-point addition is not reassociated by the JIT), four keep the multiply-adds flowing.
 */
function dot(x: Float64Array, xi: number, y: Float64Array, yi: number, length: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let k = 0;
  for (; k + 3 < length; k += 4) {
    s0 += x[xi + k]! * y[yi + k]!;
    s1 += x[xi + k + 1]! * y[yi + k + 1]!;
    s2 += x[xi + k + 2]! * y[yi + k + 2]!;
    s3 += x[xi + k + 3]! * y[yi + k + 3]!;
  }
  for (; k < length; k++) s0 += x[xi + k]! * y[yi + k]!;
  return s0 + s1 + (s2 + s3);
}

/**
 * Cholesky of a w×w diagonal block in place (its lower triangle; the upper one is left as it was), every inner loop a
 * dot product of two rows. Returns the failing pivot, or -1. The unit tests' reference (dense.ts choleskyInPlace) stays
 * the plain loop this one is checked against.
 */
function factorBlock(a: Float64Array, w: number): number {
  for (let j = 0; j < w; j++) {
    const rowJ = j * w;
    const d = a[rowJ + j]! - dot(a, rowJ, a, rowJ, j);
    if (!(d > 0) || !Number.isFinite(d)) return j;
    const ljj = Math.sqrt(d);
    a[rowJ + j] = ljj;
    for (let i = j + 1; i < w; i++) a[i * w + j] = (a[i * w + j]! - dot(a, i * w, a, rowJ, j)) / ljj;
  }
  return -1;
}

/**
 * The inverse of a lower-triangular w×w block (only its lower triangle is read), row-major. Built as its transpose U
 * row by row — U[j][i] = −Σ_{k=j}^{i−1} L[i][k]·U[j][k] / L[i][i], a dot product of two contiguous rows — and transposed
 * once at the end (on these cores 2× the speed of the row-by-row axpy form at w = 128).
 */
function invertBlock(l: Float64Array, w: number): Float64Array {
  const u = new Float64Array(w * w);
  for (let j = 0; j < w; j++) {
    const rowJ = j * w;
    u[rowJ + j] = 1 / l[rowJ + j]!;
    for (let i = j + 1; i < w; i++) u[rowJ + i] = -dot(l, i * w + j, u, rowJ + j, i - j) / l[i * w + i]!;
  }
  const inverse = new Float64Array(w * w);
  for (let i = 0; i < w; i++) for (let j = 0; j <= i; j++) inverse[i * w + j] = u[j * w + i]!;
  return inverse;
}

/** Copies rows [r0, r1) × columns [c0, c1) of a row-major matrix with `stride` into a new array. */
function block(a: Float64Array, stride: number, r0: number, r1: number, c0: number, c1: number): Float64Array {
  const cols = c1 - c0;
  const out = new Float64Array((r1 - r0) * cols);
  for (let i = r0; i < r1; i++) out.set(a.subarray(i * stride + c0, i * stride + c1), (i - r0) * cols);
  return out;
}

function writeBlock(a: Float64Array, stride: number, r0: number, c0: number, src: Float64Array, rows: number, cols: number): void {
  for (let i = 0; i < rows; i++) a.set(src.subarray(i * cols, (i + 1) * cols), (r0 + i) * stride + c0);
}

/**
 * Left-looking blocked Cholesky whose O(n³) parts (panel updates, triangular solves, substitution)
 * run as onnxruntime float64 Gemm/MatMul graphs; only nb×nb diagonal blocks are factored in TS.
 * Each call returns a panel, never the whole trailing matrix, so little is copied back.
 */
export async function createOrtSolver(options: OrtSolverOptions = {}): Promise<SpdSolver> {
  const steps = options.jitterSteps ?? DEFAULT_JITTER_STEPS;
  const sessionOptions = (memoryArena: boolean): SessionOptions => ({
    memoryArena,
    allowSpinning: false,
    ...(options.device === undefined ? {} : { device: options.device }),
    ...(options.threads === undefined ? {} : { intraOpThreads: options.threads }),
  });
  // Two sets of kernel sessions, created when first needed: small groups (arena on) and large ones (the option's arena).
  const sets = new Map<boolean, Promise<Map<KernelName, InferenceSession>>>();
  const sessionsFor = (small: boolean): Promise<Map<KernelName, InferenceSession>> => {
    let set = sets.get(small);
    if (set === undefined) {
      set = (async () => {
        const made = new Map<KernelName, InferenceSession>();
        for (const name of Object.keys(kernels) as KernelName[])
          made.set(name, await createSession(kernels[name], sessionOptions(small || (options.memoryArena ?? true))));
        return made;
      })();
      sets.set(small, set);
    }
    return set;
  };
  await sessionsFor(false);
  /** Rows of `a` per residual block: each block's slice of the upper triangle stays under RESIDUAL_SLICE values. */
  const residualRows = (n: number): number => options.blockSize ?? Math.max(16, Math.floor(RESIDUAL_SLICE / n));
  const residual = async (
    { run }: Kernels,
    a: Float64Array,
    n: number,
    x: Float64Array,
    r: Float64Array,
    s: number,
    diagonal: Float64Array,
  ): Promise<number> => {
    const sx = new Float64Array(n * s);
    const rows = residualRows(n);
    for (let j0 = 0; j0 < n; j0 += rows) {
      const j1 = Math.min(n, j0 + rows);
      const out = await run('residualRows', {
        A: t64(a, n, n),
        X: t64(x, n, s),
        ...region('B', j0, j1, j0, n),
        ...region('Xb', j0, n, 0, s),
        ...region('Xd', j0, j1, 0, s),
        i_k: i64(1),
      });
      // The first (j1 − j0)·s values are rows j0:j1 of U·X, the rest rows j0:n of this block's Uᵀ·X.
      const base = j0 * s;
      for (let i = 0; i < (j1 - j0) * s; i++) sx[base + i] = sx[base + i]! + out[i]!;
      const shift = (j1 - j0) * s;
      for (let i = 0; i < (n - j0) * s; i++) sx[base + i] = sx[base + i]! + out[shift + i]!;
    }
    let en = 0;
    let rn = 0;
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < s; c++) {
        const e = sx[i * s + c]! + diagonal[i]! * x[i * s + c]! - r[i * s + c]!;
        en += e * e;
        rn += r[i * s + c]! ** 2;
      }
    }
    return rn === 0 ? Math.sqrt(en) : Math.sqrt(en / rn);
  };
  /** The kernels one solve runs, on its set of sessions, and its block size. */
  interface Kernels {
    readonly nb: number;
    readonly run: (name: KernelName, feeds: Record<string, Tensor>) => Promise<Float64Array>;
  }
  const kernelsFor = async (n: number): Promise<Kernels> => {
    const small = n <= SMALL_SOLVE;
    const sessions = await sessionsFor(small);
    return {
      nb: options.blockSize ?? (small ? 128 : 192),
      run: async (name, feeds) => Object.values(await sessions.get(name)!.run(feeds))[0]!.data as Float64Array,
    };
  };

  /** Factor in place; returns the inverse diagonal blocks, or the failing pivot index. */
  const factor = async ({ nb, run }: Kernels, a: Float64Array, n: number): Promise<{ inverses: Float64Array[] } | { failedAt: number }> => {
    const inverses: Float64Array[] = [];
    for (let j0 = 0; j0 < n; j0 += nb) {
      const j1 = Math.min(n, j0 + nb);
      const w = j1 - j0;
      const whole = t64(a, n, n);
      const top =
        j0 === 0
          ? block(a, n, j0, j1, j0, j1)
          : await run('syrk', { A: whole, ...region('P', j0, j1, 0, j0), ...region('C', j0, j1, j0, j1) });
      const failed = factorBlock(top, w);
      if (failed >= 0) return { failedAt: j0 + failed };
      const linv = invertBlock(top, w);
      inverses.push(linv);
      for (let i = 0; i < w; i++) for (let k = 0; k <= i; k++) a[(j0 + i) * n + j0 + k] = top[i * w + k]!;
      const m2 = n - j1;
      if (m2 === 0) continue;
      const l21 =
        j0 === 0
          ? await run('scale', { A: whole, Linv: t64(linv, w, w), ...region('C2', j1, n, j0, j1) })
          : await run('panel', {
              A: whole,
              Linv: t64(linv, w, w),
              ...region('P2', j1, n, 0, j0),
              ...region('P1', j0, j1, 0, j0),
              ...region('C2', j1, n, j0, j1),
            });
      writeBlock(a, n, j1, j0, l21, m2, w);
    }
    return { inverses };
  };

  const substitute = async (
    { nb, run }: Kernels,
    a: Float64Array,
    n: number,
    r: Float64Array,
    rhs: number,
    inverses: Float64Array[],
  ): Promise<Float64Array> => {
    const y = new Float64Array(n * rhs);
    for (let b = 0, j0 = 0; j0 < n; b++, j0 += nb) {
      const j1 = Math.min(n, j0 + nb);
      const w = j1 - j0;
      const rk = t64(r.subarray(j0 * rhs, j1 * rhs), w, rhs);
      const linv = t64(inverses[b]!, w, w);
      const yk =
        j0 === 0
          ? await run('apply', { Linv: linv, Rk: rk })
          : await run('forward', {
              A: t64(a, n, n),
              Yprev: t64(y.subarray(0, j0 * rhs), j0, rhs),
              Rk: rk,
              Linv: linv,
              ...region('L', j0, j1, 0, j0),
            });
      y.set(yk, j0 * rhs);
    }
    // Back substitution in place: block b of the buffer holds Yk until Xk replaces it, and the rows after it already
    // hold X (one n×rhs buffer fewer: fresh memory costs page faults on every solve).
    const x = y;
    const blocks = inverses.length;
    for (let b = blocks - 1; b >= 0; b--) {
      const j0 = b * nb;
      const j1 = Math.min(n, j0 + nb);
      const w = j1 - j0;
      const yk = t64(y.subarray(j0 * rhs, j1 * rhs), w, rhs);
      const linv = t64(inverses[b]!, w, w);
      const xk =
        j1 === n
          ? await run('applyT', { Linv: linv, Yk: yk })
          : await run('backward', {
              A: t64(a, n, n),
              Xafter: t64(x.subarray(j1 * rhs), n - j1, rhs),
              Yk: yk,
              Linv: linv,
              ...region('L', j1, n, j0, j1),
            });
      x.set(xk, j0 * rhs);
    }
    return x;
  };

  return {
    name: `onnxruntime blocked Cholesky (nb=${options.blockSize ?? '128/192'})`,
    async solve(a, n, r, rhs, label) {
      const started = performance.now();
      const k = await kernelsFor(n);
      checkFinite(a, label, 'the summed Gram');
      checkFinite(r, label, 'the summed G·W');
      const diag = new Float64Array(n);
      let mean = 0;
      for (let i = 0; i < n; i++) mean += diag[i] = a[i * n + i]!;
      mean /= n;
      if (!(mean > 0)) {
        throw new GramfuseError(
          ErrorCode.SolveFailed,
          `layer ${label}: the Gram's diagonal is not positive (mean ${mean}); no owner contributed rows to this layer`,
          {
            facts: { layer: label },
          },
        );
      }
      let jitter = 0;
      let result = await factor(k, a, n);
      for (const step of steps) {
        if ('inverses' in result) break;
        // Restore the lower triangle from the untouched upper one, then add jitter to the diagonal.
        mirrorUpper(a, n);
        jitter = step;
        for (let i = 0; i < n; i++) a[i * n + i] = diag[i]! + step * mean;
        result = await factor(k, a, n);
      }
      if (!('inverses' in result)) {
        throw new GramfuseError(
          ErrorCode.SolveFailed,
          `layer ${label}: the Gram is not positive definite even with diagonal jitter ${steps.at(-1)} × mean diagonal (pivot ${result.failedAt} of ${n}); check that owners' statistics are finite and come from the same model`,
          { facts: { layer: label, pivot: result.failedAt, n } },
        );
      }
      const x = await substitute(k, a, n, r, rhs, result.inverses);
      checkFinite(x, label, 'the solution');
      let lmin = Infinity;
      let lmax = 0;
      for (let i = 0; i < n; i++) {
        const l = a[i * n + i]!;
        lmin = Math.min(lmin, l);
        lmax = Math.max(lmax, l);
      }
      // Residual against the (jittered) matrix actually solved, rebuilt inside the graph from the upper
      // triangle the factorization left untouched, on up to 16 evenly spaced right-hand sides.
      const columns =
        rhs <= 16 ? Array.from({ length: rhs }, (_, c) => c) : Array.from({ length: 16 }, (_, c) => Math.floor((c * rhs) / 16));
      const s = columns.length;
      const xs = new Float64Array(n * s);
      const rs = new Float64Array(n * s);
      for (let i = 0; i < n; i++) {
        for (let c = 0; c < s; c++) {
          xs[i * s + c] = x[i * rhs + columns[c]!]!;
          rs[i * s + c] = r[i * rhs + columns[c]!]!;
        }
      }
      const d = Float64Array.from(diag, (v) => v + jitter * mean);
      const relativeResidual = await residual(k, a, n, xs, rs, s, d);
      return {
        x,
        jitter,
        conditionEstimate: (lmax / lmin) ** 2,
        relativeResidual,
        residualColumns: s,
        seconds: (performance.now() - started) / 1000,
      };
    },
    async residual(a, n, x, r, rhs, diagonal) {
      return residual(await kernelsFor(n), a, n, x, r, rhs, diagonal);
    },
    async release() {
      for (const set of sets.values()) for (const session of (await set).values()) await session.release();
      sets.clear();
    },
  };
}

function checkFinite(values: Float64Array, label: string, what: string): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i]!)) {
      throw new GramfuseError(
        ErrorCode.NonFinite,
        `layer ${label}: ${what} holds a non-finite value (${values[i]}) at index ${i}; nothing was written`,
        {
          facts: { layer: label, index: i, what },
        },
      );
    }
  }
}

const matmulKernel = kernelModel(['A', 'B'], [{ op: 'MatMul', inputs: ['A', 'B'], output: 'C' }], 'C');
let matmulSession: Promise<InferenceSession> | undefined;

/** C = A·B in float64 (A m×k, B k×n, row-major) on onnxruntime's native kernels. */
export async function matmulNative(a: Float64Array, b: Float64Array, m: number, k: number, n: number): Promise<Float64Array> {
  matmulSession ??= createSession(matmulKernel);
  const session = await matmulSession;
  const out = await session.run({ A: t64(a, m, k), B: t64(b, k, n) });
  return Object.values(out)[0]!.data as Float64Array;
}

/** A kernel graph of the solver, for probing an execution provider (resolveDevice) with the graphs it will run. */
export function solverProbeModel(): Uint8Array {
  return kernels.syrk;
}
