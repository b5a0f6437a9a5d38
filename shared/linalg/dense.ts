/**
 * Small dense float64 kernels in plain TypeScript, row-major. Used for the blocks the native kernels
 * hand back (nb×nb Cholesky and triangular inverse), for packing, and as the independent float64
 * reference the tests and the solve benchmark compare against. Not for O(n³) work at large n.
 */

/** Packed upper triangle, row by row: (0,0) (0,1) … (0,n−1) (1,1) … (n−1,n−1). Length n(n+1)/2. */
export function packedLength(n: number): number {
  return (n * (n + 1)) / 2;
}

export function packUpper(full: Float64Array, n: number): Float64Array {
  const out = new Float64Array(packedLength(n));
  let k = 0;
  for (let i = 0; i < n; i++) {
    out.set(full.subarray(i * n + i, i * n + n), k);
    k += n - i;
  }
  return out;
}

/**
 * Copies the upper triangle of a row-major n×n matrix into its lower one, in place, in 64 × 64 tiles (a column walk
 * of an order-3072 matrix strides 24 KiB per element: 36–56 ms against 13–18 ms tiled on these cores).
 */
export function mirrorUpper(a: Float64Array, n: number): void {
  const tile = 64;
  for (let ib = 0; ib < n; ib += tile)
    for (let jb = 0; jb <= ib; jb += tile)
      for (let i = ib, iEnd = Math.min(ib + tile, n); i < iEnd; i++)
        for (let j = jb, jEnd = Math.min(jb + tile, i); j < jEnd; j++) a[i * n + j] = a[j * n + i]!;
}

/** Symmetric full matrix from its packed upper triangle. */
export function unpackSymmetric(packed: ArrayLike<number>, n: number): Float64Array {
  const out = new Float64Array(n * n);
  let k = 0;
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      const v = packed[k++]!;
      out[i * n + j] = v;
      out[j * n + i] = v;
    }
  }
  return out;
}

/**
 * In-place lower Cholesky of the n×n block at `offset` with row stride `stride`: on success the lower
 * triangle holds L (upper triangle untouched) and the function returns -1; otherwise the index of the
 * first pivot that is not positive and finite.
 */
export function choleskyInPlace(a: Float64Array, n: number, stride = n, offset = 0): number {
  for (let j = 0; j < n; j++) {
    const rowJ = offset + j * stride;
    let d = a[rowJ + j]!;
    for (let k = 0; k < j; k++) d -= a[rowJ + k]! * a[rowJ + k]!;
    if (!(d > 0) || !Number.isFinite(d)) return j;
    const ljj = Math.sqrt(d);
    a[rowJ + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      const rowI = offset + i * stride;
      let s = a[rowI + j]!;
      for (let k = 0; k < j; k++) s -= a[rowI + k]! * a[rowJ + k]!;
      a[rowI + j] = s / ljj;
    }
  }
  return -1;
}

/** Inverse of a lower-triangular n×n matrix (only the lower triangle of `l` is read). */
export function invertLower(l: Float64Array, n: number): Float64Array {
  // Row by row: inv[i, :] = (eᵢ − Σ_{k<i} L[i,k]·inv[k, :]) / L[i,i]; inner loops run along rows.
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const rowI = i * n;
    for (let k = 0; k < i; k++) {
      const lik = l[rowI + k]!;
      if (lik === 0) continue;
      const rowK = k * n;
      for (let j = 0; j <= k; j++) inv[rowI + j] = inv[rowI + j]! - lik * inv[rowK + j]!;
    }
    const d = 1 / l[rowI + i]!;
    for (let j = 0; j < i; j++) inv[rowI + j] = inv[rowI + j]! * d;
    inv[rowI + i] = d;
  }
  return inv;
}

/**
 * Reference SPD solve A X = R in float64 (Cholesky, then forward and back substitution), A n×n
 * symmetric, R n×r. Straight loops, cache-friendly order: the independent check and the baseline.
 */
export function referenceSolve(a: Float64Array, n: number, r: Float64Array, rhs: number): Float64Array {
  const l = a.slice();
  const failed = choleskyInPlace(l, n);
  if (failed >= 0) throw new Error(`reference Cholesky: pivot ${failed} is not positive`);
  const x = r.slice();
  // L Y = R, row by row: Y_i = (R_i − Σ_k<i L_ik Y_k) / L_ii
  for (let i = 0; i < n; i++) {
    const xi = i * rhs;
    for (let k = 0; k < i; k++) {
      const lik = l[i * n + k]!;
      if (lik === 0) continue;
      const xk = k * rhs;
      for (let c = 0; c < rhs; c++) x[xi + c] = x[xi + c]! - lik * x[xk + c]!;
    }
    const inv = 1 / l[i * n + i]!;
    for (let c = 0; c < rhs; c++) x[xi + c] = x[xi + c]! * inv;
  }
  // Lᵀ X = Y, from the bottom: X_i = (Y_i − Σ_k>i L_ki X_k) / L_ii
  for (let i = n - 1; i >= 0; i--) {
    const xi = i * rhs;
    for (let k = i + 1; k < n; k++) {
      const lki = l[k * n + i]!;
      if (lki === 0) continue;
      const xk = k * rhs;
      for (let c = 0; c < rhs; c++) x[xi + c] = x[xi + c]! - lki * x[xk + c]!;
    }
    const inv = 1 / l[i * n + i]!;
    for (let c = 0; c < rhs; c++) x[xi + c] = x[xi + c]! * inv;
  }
  return x;
}

/** C = A·B for row-major A (m×k) and B (k×n), float64. Reference only. */
export function matmul(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const aip = a[i * k + p]!;
      if (aip === 0) continue;
      for (let j = 0; j < n; j++) c[i * n + j] = c[i * n + j]! + aip * b[p * n + j]!;
    }
  }
  return c;
}

export function frobenius(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * a[i]!;
  return Math.sqrt(s);
}
