import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ErrorCode, GramfuseError } from '../../../shared/index.js';
import { createOrtSolver, matmul, mirrorUpper, referenceSolve, type SpdSolver } from '../../../shared/linalg/index.js';
import { relativeFrobenius } from '../../helpers/fixtures.js';
import { gramOf, randn, rng } from '../../helpers/random.js';

let solver: SpdSolver;
beforeAll(async () => {
  // A small block size so that even n = 50 exercises several blocks and every kernel.
  solver = await createOrtSolver({ blockSize: 16, threads: 2 });
});
afterAll(async () => solver.release());

function randomSpd(n: number, rows: number, seed: number, ridge = 0): Float64Array {
  const x = randn(rng(seed), rows * n);
  const a = gramOf(x, rows, n);
  for (let i = 0; i < n; i++) a[i * n + i] = a[i * n + i]! + ridge;
  return a;
}

describe('onnxruntime blocked Cholesky solve vs the float64 reference (≤ 1e-9 relative)', () => {
  it.each([
    [1, 1],
    [7, 3],
    [16, 16],
    [50, 20],
    [97, 40],
    [200, 64],
  ])('n=%i, %i right-hand sides', async (n, rhs) => {
    const a = randomSpd(n, n + 30, n);
    const r = randn(rng(n + 1), n * rhs);
    const expected = referenceSolve(a, n, r, rhs);
    const result = await solver.solve(a.slice(), n, r, rhs, `test n=${n}`);
    expect(relativeFrobenius(result.x, expected)).toBeLessThanOrEqual(1e-9);
    expect(result.jitter).toBe(0);
    expect(result.relativeResidual).toBeLessThan(1e-10);
    expect(result.conditionEstimate).toBeGreaterThanOrEqual(1);
  });

  it('an ill-conditioned matrix (condition 1e10) agrees with the reference to the accuracy the condition allows', async () => {
    const n = 60;
    const random = rng(3);
    // A = Q·diag(s)·Qᵀ, Q orthogonal (Gram–Schmidt), s spread over 10 orders of magnitude.
    const q = randn(random, n * n);
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < i; k++) {
        let dot = 0;
        for (let j = 0; j < n; j++) dot += q[i * n + j]! * q[k * n + j]!;
        for (let j = 0; j < n; j++) q[i * n + j] = q[i * n + j]! - dot * q[k * n + j]!;
      }
      let norm = 0;
      for (let j = 0; j < n; j++) norm += q[i * n + j]! ** 2;
      for (let j = 0; j < n; j++) q[i * n + j] = q[i * n + j]! / Math.sqrt(norm);
    }
    const a = new Float64Array(n * n);
    for (let k = 0; k < n; k++) {
      const s = 10 ** (-10 * (k / (n - 1)));
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = a[i * n + j]! + s * q[k * n + i]! * q[k * n + j]!;
    }
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) a[i * n + j] = a[j * n + i]!;
    const r = randn(random, n * 4);
    const expected = referenceSolve(a, n, r, 4);
    const result = await solver.solve(a.slice(), n, r, 4, 'ill-conditioned');
    expect(result.jitter).toBe(0);
    expect(result.conditionEstimate).toBeGreaterThan(1e4);
    // Forward error of a backward-stable solve is about ε·cond = 2e-6; both solvers are such.
    expect(relativeFrobenius(result.x, expected)).toBeLessThan(1e-4);
    expect(result.relativeResidual).toBeLessThan(1e-5);
  });

  it('a singular Gram (fewer rows than features) gets diagonal jitter, and says so', async () => {
    const n = 40;
    const a = randomSpd(n, 10, 5); // rank 10
    const r = matmul(a, randn(rng(6), n * 3), n, n, 3); // consistent right-hand sides
    const result = await solver.solve(a.slice(), n, r, 3, 'rank-deficient');
    expect(result.jitter).toBeGreaterThan(0);
    expect(result.relativeResidual).toBeLessThan(1e-3);
    expect(result.x.every(Number.isFinite)).toBe(true);
  });

  it('a rank-deficient head (zero rows and columns) is still solved by jitter', async () => {
    const n = 20;
    const a = randomSpd(n, 30, 8);
    for (let i = 0; i < n; i++) {
      a[5 * n + i] = 0;
      a[i * n + 5] = 0;
    }
    a[5 * n + 5] = 0;
    const result = await solver.solve(a.slice(), n, randn(rng(9), n * 2), 2, 'head');
    expect(result.jitter).toBeGreaterThan(0);
    expect(result.x.every(Number.isFinite)).toBe(true);
  });

  it.each([
    [7, 3],
    [50, 16],
    [97, 5],
  ])(
    'the residual check, n=%i with %i right-hand sides, matches a float64 ‖S·X − R‖/‖R‖ and reads only the strict upper triangle',
    async (n, rhs) => {
      // X is no solution, so the residual is of order one and its digits are the product's, not rounding noise.
      const full = randomSpd(n, n + 5, 20 + n);
      const x = randn(rng(21 + n), n * rhs);
      const r = randn(rng(22 + n), n * rhs);
      const diagonal = Float64Array.from({ length: n }, (_, i) => full[i * n + i]! + 0.5);
      const s = full.slice();
      for (let i = 0; i < n; i++) s[i * n + i] = diagonal[i]!;
      const sx = matmul(s, x, n, n, rhs);
      let en = 0;
      let rn = 0;
      for (let i = 0; i < n * rhs; i++) {
        en += (sx[i]! - r[i]!) ** 2;
        rn += r[i]! ** 2;
      }
      // What solve leaves in the lower triangle (the factor) and on the diagonal must not be read: NaN there.
      const a = full.slice();
      for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) a[i * n + j] = Number.NaN;
      const got = await solver.residual(a, n, x, r, rhs, diagonal);
      expect(Math.abs(got - Math.sqrt(en / rn)) / Math.sqrt(en / rn)).toBeLessThan(1e-12);
    },
  );

  it('non-finite input is a coded error naming the layer', async () => {
    const n = 8;
    const a = randomSpd(n, 20, 10);
    a[9] = Number.NaN;
    const error = await solver.solve(a, n, new Float64Array(n), 1, 'layer.3 (q, k, v)').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GramfuseError);
    expect((error as GramfuseError).code).toBe(ErrorCode.NonFinite);
    expect((error as GramfuseError).message).toMatch(/^layer layer\.3 \(q, k, v\): the summed Gram holds a non-finite value/);
  });

  it('a matrix that no jitter can save fails with SOLVE_FAILED', async () => {
    const n = 6;
    const a = randomSpd(n, 20, 11);
    a[3 * n + 3] = -30; // the mean diagonal stays positive, pivot 3 is negative beyond any jitter step
    const error = await solver.solve(a, n, new Float64Array(n), 1, 'g7').catch((e: unknown) => e);
    expect((error as GramfuseError).code).toBe(ErrorCode.SolveFailed);
    expect((error as GramfuseError).message).toMatch(/layer g7: the Gram is not positive definite even with diagonal jitter/);
  });
});

describe('mirrorUpper', () => {
  it.each([1, 63, 64, 65, 200])('order %i: the lower triangle becomes the upper one, which stays as it was', (n) => {
    const random = rng(n);
    const a = Float64Array.from({ length: n * n }, () => random());
    const upper = a.slice();
    mirrorUpper(a, n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) expect(a[i * n + j]).toBe(j >= i ? upper[i * n + j] : upper[j * n + i]);
  });
});
