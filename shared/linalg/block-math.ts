// The block math done in TypeScript: the nb×nb diagonal blocks the blocked Cholesky factors and inverts itself (the
// O(n³) rest runs as kernel graphs), and block copies in and out of a row-major matrix. Pure, no onnxruntime.

/**
 * Σ x[xi + k]·y[yi + k] for k < length, in four partial sums: one running sum waits on each addition before the next
 * (floating-point addition is not reassociated by the JIT), four keep the multiply-adds flowing.
 */
export function dot(x: Float64Array, xi: number, y: Float64Array, yi: number, length: number): number {
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
export function factorBlock(a: Float64Array, w: number): number {
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
export function invertBlock(l: Float64Array, w: number): Float64Array {
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
export function block(a: Float64Array, stride: number, r0: number, r1: number, c0: number, c1: number): Float64Array {
  const cols = c1 - c0;
  const out = new Float64Array((r1 - r0) * cols);
  for (let i = r0; i < r1; i++) out.set(a.subarray(i * stride + c0, i * stride + c1), (i - r0) * cols);
  return out;
}

export function writeBlock(a: Float64Array, stride: number, r0: number, c0: number, src: Float64Array, rows: number, cols: number): void {
  for (let i = 0; i < rows; i++) a.set(src.subarray(i * cols, (i + 1) * cols), (r0 + i) * stride + c0);
}
