// The left-looking blocked Cholesky and its substitutions over one set of kernel sessions: the O(n³) parts (panel
// updates, triangular solves, substitution, the residual) run as kernel graphs (kernel-graphs.ts), only the nb×nb
// diagonal blocks are factored and inverted in TypeScript (block-math.ts). Each kernel call returns a panel, never
// the whole trailing matrix, so little is copied back.
import type { Tensor } from '../onnx/runtime.js';
import { block, factorBlock, invertBlock, writeBlock } from './block-math.js';
import { i64, type KernelName, region, t64 } from './kernel-graphs.js';

/** The kernels one solve runs, on its set of sessions, and its block size. */
export interface Kernels {
  readonly nb: number;
  readonly run: (name: KernelName, feeds: Record<string, Tensor>) => Promise<Float64Array>;
}

/** Factor in place; returns the inverse diagonal blocks, or the failing pivot index. */
export async function factor(
  { nb, run }: Kernels,
  a: Float64Array,
  n: number,
): Promise<{ inverses: Float64Array[] } | { failedAt: number }> {
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
}

/** X with L·Lᵀ·X = R, from the factor in `a`'s lower triangle and its inverse diagonal blocks. */
export async function substitute(
  { nb, run }: Kernels,
  a: Float64Array,
  n: number,
  r: Float64Array,
  rhs: number,
  inverses: Float64Array[],
): Promise<Float64Array> {
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
}

/**
 * ‖S·X − R‖_F / ‖R‖_F (SpdSolver.residual) with S rebuilt inside the graph from `a`'s upper triangle, `rows` rows of
 * `a` per kernel call.
 */
export async function residual(
  { run }: Kernels,
  rows: number,
  a: Float64Array,
  n: number,
  x: Float64Array,
  r: Float64Array,
  s: number,
  diagonal: Float64Array,
): Promise<number> {
  const sx = new Float64Array(n * s);
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
}
