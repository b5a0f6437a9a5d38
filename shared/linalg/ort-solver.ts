// The onnxruntime implementation of SpdSolver (spd-solver.ts): kernel sessions per size class, the jitter retries
// and the diagnostics around the blocked Cholesky (blocked-cholesky.ts).
import { ErrorCode, GramfuseError } from '../errors.js';
import { createSession, type InferenceSession, type SessionOptions } from '../onnx/runtime.js';
import { factor, type Kernels, residual, substitute } from './blocked-cholesky.js';
import { mirrorUpper } from './dense.js';
import { type KernelName, kernels, matmulKernel, t64 } from './kernel-graphs.js';
import type { SolveResult, SpdSolver } from './spd-solver.js';

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

export const DEFAULT_JITTER_STEPS = [1e-10, 1e-8, 1e-6, 1e-4, 1e-2] as const;

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
  const kernelsFor = async (n: number): Promise<Kernels> => {
    const small = n <= SMALL_SOLVE;
    const sessions = await sessionsFor(small);
    return {
      nb: options.blockSize ?? (small ? 128 : 192),
      run: async (name, feeds) => Object.values(await sessions.get(name)!.run(feeds))[0]!.data as Float64Array,
    };
  };

  return {
    name: `onnxruntime blocked Cholesky (nb=${options.blockSize ?? '128/192'})`,
    async solve(a, n, r, rhs, label) {
      const started = performance.now();
      return solveSpd(await kernelsFor(n), residualRows(n), steps, started, a, n, r, rhs, label);
    },
    async residual(a, n, x, r, rhs, diagonal) {
      return residual(await kernelsFor(n), residualRows(n), a, n, x, r, rhs, diagonal);
    },
    async release() {
      for (const set of sets.values()) for (const session of (await set).values()) await session.release();
      sets.clear();
    },
  };
}

/**
 * SpdSolver.solve on one set of kernels: factor (with jitter when A is not positive definite), substitute, check.
 * `started` is when the call began (its seconds include creating the kernel sessions it needed).
 */
async function solveSpd(
  k: Kernels,
  residualRows: number,
  steps: readonly number[],
  started: number,
  a: Float64Array,
  n: number,
  r: Float64Array,
  rhs: number,
  label: string,
): Promise<SolveResult> {
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
  const columns = rhs <= 16 ? Array.from({ length: rhs }, (_, c) => c) : Array.from({ length: 16 }, (_, c) => Math.floor((c * rhs) / 16));
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
  const relativeResidual = await residual(k, residualRows, a, n, xs, rs, s, d);
  return {
    x,
    jitter,
    conditionEstimate: (lmax / lmin) ** 2,
    relativeResidual,
    residualColumns: s,
    seconds: (performance.now() - started) / 1000,
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

let matmulSession: Promise<InferenceSession> | undefined;

/** C = A·B in float64 (A m×k, B k×n, row-major) on onnxruntime's native kernels. */
export async function matmulNative(a: Float64Array, b: Float64Array, m: number, k: number, n: number): Promise<Float64Array> {
  matmulSession ??= createSession(matmulKernel);
  const session = await matmulSession;
  const out = await session.run({ A: t64(a, m, k), B: t64(b, k, n) });
  return Object.values(out)[0]!.data as Float64Array;
}
