import { describe, expect, it } from 'vitest';

import { DEFAULT_RESIDUAL_TOLERANCE, projectedResidual } from '../../../coordinator/index.js';
import { ErrorCode, type GramfuseError } from '../../../shared/index.js';
import { packUpper, referenceSolve } from '../../../shared/linalg/index.js';
import { parseSolveTask, solveTaskId } from '../../../shared/nats/index.js';
import { redeliveryDelayMs } from '../../../solver/index.js';
import { gramOf, randn, rng } from '../../helpers/random.js';

/** A well-conditioned SPD Gram (rows > n), right-hand sides, and the float64 reference solution. */
function system(n: number, rhs: number, seed: number): { a: Float64Array; r: Float64Array; x: Float64Array } {
  const random = rng(seed);
  const a = gramOf(randn(random, 4 * n * n), 4 * n, n);
  const r = randn(random, n * rhs);
  return { a, r, x: referenceSolve(a, n, r, rhs) };
}

/** ‖A·X − R‖_F / ‖R‖_F over every column, in float64: the figure the projections estimate. */
function exactResidual(a: Float64Array, n: number, x: Float64Array, r: Float64Array, rhs: number, shift = 0): number {
  let en = 0;
  let rn = 0;
  for (let i = 0; i < n; i++)
    for (let c = 0; c < rhs; c++) {
      let s = shift * x[i * rhs + c]!;
      for (let k = 0; k < n; k++) s += a[i * n + k]! * x[k * rhs + c]!;
      en += (s - r[i * rhs + c]!) ** 2;
      rn += r[i * rhs + c]! ** 2;
    }
  return Math.sqrt(en / rn);
}

describe("the coordinator's check of a worker's solution (random projections of ‖G̃X − R‖/‖R‖)", () => {
  const n = 48;
  const rhs = 40;
  const { a, r, x } = system(n, rhs, 7);
  const packed = packUpper(a, n);

  it('passes the float64 reference solution far below the tolerance', () => {
    expect(projectedResidual(packed, n, x, r, rhs, 0)).toBeLessThan(1e-12);
  });

  it('estimates the full residual of a wrong X within a factor of 2 (its expectation is exact)', () => {
    const random = rng(11);
    const wrong = Float64Array.from(x, (v) => v * (1 + 1e-3 * (random() - 0.5)));
    const exact = exactResidual(a, n, wrong, r, rhs);
    const estimate = projectedResidual(packed, n, wrong, r, rhs, 0);
    expect(exact).toBeGreaterThan(DEFAULT_RESIDUAL_TOLERANCE);
    expect(estimate / exact).toBeGreaterThan(0.5);
    expect(estimate / exact).toBeLessThan(2);
  });

  it('catches an X wrong in a single entry of a single column', () => {
    const wrong = x.slice();
    wrong[17 * rhs + 31] = wrong[17 * rhs + 31]! + 1e-3;
    for (let trial = 0; trial < 20; trial++)
      expect(projectedResidual(packed, n, wrong, r, rhs, 0)).toBeGreaterThan(DEFAULT_RESIDUAL_TOLERANCE);
  });

  it('checks a jittered answer against the jittered system the worker says it solved', () => {
    let mean = 0;
    for (let i = 0; i < n; i++) mean += a[i * n + i]! / n;
    const jitter = 1e-4;
    const shifted = a.slice();
    for (let i = 0; i < n; i++) shifted[i * n + i] = shifted[i * n + i]! + jitter * mean;
    const xj = referenceSolve(shifted, n, r, rhs);
    expect(exactResidual(a, n, xj, r, rhs, jitter * mean)).toBeLessThan(1e-12);
    expect(projectedResidual(packed, n, xj, r, rhs, jitter)).toBeLessThan(1e-12);
    // Claimed without its jitter, the same X does not solve G̃X = R.
    expect(projectedResidual(packed, n, xj, r, rhs, 0)).toBeGreaterThan(DEFAULT_RESIDUAL_TOLERANCE);
  });
});

describe('solve task descriptors on NATS', () => {
  const task = {
    version: 1,
    job: 'j1',
    group: 'encoder.layer.0.attention',
    nonce: '0123456789abcdef'.repeat(2),
    n: 768,
    rhs: 2304,
    gram: { sha256: 'a'.repeat(64), bytes: 8 * ((768 * 769) / 2) },
    rhsPart: { sha256: 'b'.repeat(64), bytes: 8 * 768 * 2304 },
  };

  it('parse, and name their message id by job, group and the task’s nonce (a restart re-publishes the same id; a new job of the same id and sums does not)', () => {
    const parsed = parseSolveTask(new TextEncoder().encode(JSON.stringify(task)));
    expect(parsed).toEqual(task);
    expect(solveTaskId(parsed)).toBe(`j1/encoder.layer.0.attention/${'0123456789abcdef'.repeat(2)}`);
    expect(solveTaskId({ ...parsed, nonce: 'f'.repeat(32) })).not.toBe(solveTaskId(parsed));
    expect(() => parseSolveTask(new TextEncoder().encode(JSON.stringify({ ...task, nonce: 'xyz' })))).toThrow(/solve task/);
  });

  it('refuse anything else with INVALID_DATA (carrying no tensor: an unknown field is refused)', () => {
    for (const bad of ['not json', JSON.stringify({ ...task, n: -1 }), JSON.stringify({ ...task, values: [1, 2, 3] })]) {
      let error: GramfuseError | undefined;
      try {
        parseSolveTask(new TextEncoder().encode(bad));
      } catch (e) {
        error = e as GramfuseError;
      }
      expect(error?.code).toBe(ErrorCode.InvalidData);
    }
  });

  it('come back after a growing delay when an attempt fails: 1 s, 2 s, 4 s, … at most 30 s', () => {
    expect([1, 2, 3, 4, 5, 6, 10].map(redeliveryDelayMs)).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  });
});
