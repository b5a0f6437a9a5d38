import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  CHECK_PROJECTIONS,
  checkTolerance,
  DEFAULT_RESIDUAL_TOLERANCE,
  readFloat64File,
  verifySolution,
} from '../../../coordinator/index.js';
import { ErrorCode, type GramfuseError } from '../../../shared/index.js';
import { createOrtSolver, packUpper, referenceSolve, type SpdSolver } from '../../../shared/linalg/index.js';
import { parseSolveAdvisory, parseSolveTask, solveTaskId } from '../../../shared/nats/index.js';
import { redeliveryDelayMs } from '../../../solver/index.js';
import { gramOf, randn, rng } from '../../helpers/random.js';

/** A well-conditioned SPD Gram (rows > n), right-hand sides, and the float64 reference solution. */
function system(n: number, rhs: number, seed: number): { a: Float64Array; r: Float64Array; x: Float64Array } {
  const random = rng(seed);
  const a = gramOf(randn(random, 4 * n * n), 4 * n, n);
  const r = randn(random, n * rhs);
  return { a, r, x: referenceSolve(a, n, r, rhs) };
}

/** ‖(A + shift·I)·X − R‖_F / ‖R‖_F over every column, in float64. */
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

const meanDiagonal = (a: Float64Array, n: number): number => {
  let mean = 0;
  for (let i = 0; i < n; i++) mean += a[i * n + i]! / n;
  return mean;
};
const shifted = (a: Float64Array, n: number, shift: number): Float64Array => {
  const out = a.slice();
  for (let i = 0; i < n; i++) out[i * n + i] = out[i * n + i]! + shift;
  return out;
};

let solver: SpdSolver;
beforeAll(async () => {
  solver = await createOrtSolver({ threads: 1 });
});
afterAll(async () => {
  await solver.release();
});

describe("the coordinator's check of a worker's solution (its own factorization, jitter and tolerance)", () => {
  const n = 48;
  const rhs = 40;
  const { a, r, x } = system(n, rhs, 7);
  const packed = packUpper(a, n);
  const verify = (answer: Float64Array, claimedJitter = 0) =>
    verifySolution({ packed, n, r, rhs, x: answer, claimedJitter, tolerance: DEFAULT_RESIDUAL_TOLERANCE, label: 'g' }, solver);

  it('accepts the float64 reference solution (another algorithm than its own) with diagnostics it computed itself', async () => {
    const verdict = await verify(x);
    expect(verdict.accepted).toBe(true);
    if (!verdict.accepted) return;
    expect(verdict.diagnostics.jitter).toBe(0);
    expect(CHECK_PROJECTIONS).toBeGreaterThanOrEqual(16);
    expect(verdict.diagnostics.residualColumns).toBe(CHECK_PROJECTIONS);
    expect(verdict.diagnostics.relativeResidual).toBeLessThan(1e-12);
    // κ̂ from the coordinator's own factor: a well-conditioned Gram of 4n rows.
    expect(verdict.diagnostics.conditionEstimate).toBeGreaterThan(1);
    expect(verdict.diagnostics.conditionEstimate).toBeLessThan(1e3);
  });

  it('refuses an X wrong in a single entry of a single column, every time', async () => {
    const wrong = x.slice();
    wrong[17 * rhs + 31] = wrong[17 * rhs + 31]! + 1e-3;
    for (let trial = 0; trial < 10; trial++) expect((await verify(wrong)).accepted).toBe(false);
  });

  it('refuses an answer over-jittered by 1e-4 that says so (it solves another system than the one the coordinator would)', async () => {
    const jitter = 1e-4;
    const xj = referenceSolve(shifted(a, n, jitter * meanDiagonal(a, n)), n, r, rhs);
    // It does solve the system it names: the old check (the residual at the claimed jitter) passed it.
    expect(exactResidual(a, n, xj, r, rhs, jitter * meanDiagonal(a, n))).toBeLessThan(1e-12);
    const verdict = await verify(xj, jitter);
    expect(verdict.accepted).toBe(false);
    expect(!verdict.accepted && verdict.reason).toMatch(
      /^over-jittered: solved with diagonal jitter 0.0001 × mean diagonal, the coordinator's factorization of Σ G̃ needs 0 /,
    );
  });

  it('refuses an answer jittered by 1e-8 that claims none, though its residual is below the old fixed tolerance of 1e-6', async () => {
    const xj = referenceSolve(shifted(a, n, 1e-8 * meanDiagonal(a, n)), n, r, rhs);
    expect(exactResidual(a, n, xj, r, rhs)).toBeLessThan(DEFAULT_RESIDUAL_TOLERANCE);
    const verdict = await verify(xj, 0);
    expect(verdict.accepted).toBe(false);
    expect(!verdict.accepted && verdict.reason).toMatch(/above the tolerance \S+ \(64·n·ε·κ̂ at the coordinator's condition estimate/);
  });

  it('takes the jitter of its own ladder on a Gram that is not positive definite, and only that one', async () => {
    // Rank n/2, shifted down by 1e-9 × mean diagonal: the steps 0 and 1e-10 fail, 1e-8 factors.
    const random = rng(3);
    const low = gramOf(randn(random, (n / 2) * n), n / 2, n);
    const indefinite = shifted(low, n, -1e-9 * meanDiagonal(low, n));
    const lowPacked = packUpper(indefinite, n);
    const mean = meanDiagonal(indefinite, n);
    const check = (answer: Float64Array, jitter: number) =>
      verifySolution(
        { packed: lowPacked, n, r, rhs, x: answer, claimedJitter: jitter, tolerance: DEFAULT_RESIDUAL_TOLERANCE, label: 'g' },
        solver,
      );
    const right = referenceSolve(shifted(indefinite, n, 1e-8 * mean), n, r, rhs);
    const verdict = await check(right, 1e-8);
    expect(verdict.accepted).toBe(true);
    expect(verdict.accepted && verdict.diagnostics.jitter).toBe(1e-8);
    const over = referenceSolve(shifted(indefinite, n, 1e-6 * mean), n, r, rhs);
    expect((await check(over, 1e-6)).accepted).toBe(false);
    const under = await check(right, 0);
    expect(!under.accepted && under.reason).toMatch(/needs 1e-8 /);
  });

  it('scales the tolerance with the condition estimate, never above the cap', () => {
    expect(checkTolerance(100, 1, 1e-6)).toBeCloseTo(64 * 100 * Number.EPSILON, 20);
    expect(checkTolerance(100, 1e3, 1e-6) / checkTolerance(100, 1, 1e-6)).toBeCloseTo(1e3, 6);
    expect(checkTolerance(100, 1e12, 1e-6)).toBe(1e-6);
    expect(checkTolerance(100, Infinity, 1e-6)).toBe(1e-6);
  });
});

describe('the check reads task parts and answers in slices', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gramfuse-slices-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const values = Float64Array.from({ length: 1001 }, (_, i) => Math.sin(i) * 1e3);
  const path = join(dir, 'x.bin');
  writeFileSync(path, new Uint8Array(values.buffer));

  it('reads every value whatever the slice (24 bytes; 7 bytes, not a multiple of 8; the last slice short)', async () => {
    for (const slice of [24, 7, 8008, 1 << 20]) expect(await readFloat64File(path, values.length, slice)).toEqual(values);
  });

  it('answers undefined for a file of another size', async () => {
    expect(await readFloat64File(path, values.length + 1, 24)).toBeUndefined();
    expect(await readFloat64File(path, values.length - 1, 24)).toBeUndefined();
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

  it('read JetStream advisories by their stream sequence; anything else on the advisory subject is skipped, not a crash', () => {
    const encode = (value: string) => new TextEncoder().encode(value);
    // nats-server 2.9.10's MSG_TERMINATED advisory, as received.
    const terminated =
      '{"type":"io.nats.jetstream.advisory.v1.terminated","id":"41KGwSk9jwLiY34BsvLbye","timestamp":"2026-12-08T00:01:50.782187489Z","stream":"S","consumer":"C","consumer_seq":1,"stream_seq":7,"deliveries":2}';
    expect(parseSolveAdvisory(encode(terminated))).toEqual({ stream_seq: 7, deliveries: 2 });
    for (const bad of ['garbage', '{"stream_seq":"7"}', '{"stream_seq":-1}', 'null', '[]'])
      expect(parseSolveAdvisory(encode(bad))).toBeUndefined();
  });
});
