// bench/solve: the per-layer RegMean solve (float64 Cholesky, 768 right-hand sides) on gramfuse's
// onnxruntime kernels vs a plain TypeScript float64 Cholesky measured in the same run, and LAPACK
// (OpenBLAS via scipy/numpy) as the external baseline when python3 has numpy.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { createOrtSolver, referenceSolve } from '../shared/linalg/index.js';
import { type BenchContext, median, table } from './harness.js';

function randomGram(n: number, seed: number): Float64Array {
  // A Gram-like SPD matrix: Σ over rows of xxᵀ with correlated features, plus 10 % of its diagonal (α = 0.9).
  let s = seed >>> 0;
  const random = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
  const rows = 2 * n;
  const a = new Float64Array(n * n);
  const x = new Float64Array(n);
  for (let r = 0; r < rows; r++) {
    let prev = 0;
    for (let i = 0; i < n; i++) x[i] = prev = 0.6 * prev + random();
    for (let i = 0; i < n; i++) {
      const xi = x[i]!;
      for (let j = i; j < n; j++) a[i * n + j] = a[i * n + j]! + xi * x[j]!;
    }
  }
  for (let i = 0; i < n; i++) {
    a[i * n + i] = a[i * n + i]! / 0.9;
    for (let j = i + 1; j < n; j++) a[j * n + i] = a[i * n + j]!;
  }
  return a;
}

/**
 * The LAPACK baseline's environment: the bench's thread count, and OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed.
 * These machines set both for old OpenBLAS builds; they slow a current numpy's bundled OpenBLAS by 2x or more
 * (../shared/PLATFORM.md), which would flatter gramfuse. Only this command's environment changes.
 */
function lapackEnvironment(threads: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  return env;
}

export async function benchSolve(context: BenchContext): Promise<void> {
  const sizes = context.quick ? [768] : [768, 3072, 4096];
  const rhs = 768;
  const rows: (string | number)[][] = [];
  const kernels: string[] = [];
  const python = spawnSync('python3', ['-c', 'import numpy'], { stdio: 'ignore' }).status === 0;
  const dir = mkdtempSync(join(tmpdir(), 'gramfuse-bench-solve-'));
  try {
    for (const n of sizes) {
      const a = randomGram(n, n);
      const r = Float64Array.from({ length: n * rhs }, (_, i) => Math.sin(i * 0.37));
      // The coordinator's configuration: onnxruntime's memory arena off (bounded memory; see bench/scale).
      const solver = await createOrtSolver({ threads: context.threads, memoryArena: false });
      const ours: number[] = [];
      let x: Float64Array = new Float64Array(0);
      let residual = 0;
      // Untimed solves first, as the coordinator's many groups per job find the kernels warm: once above n = 1024, three
      // at or below, where groups have kernel sessions of their own, created by the first such solve, whose arena grows
      // over its first calls (on 7 December the three solves after the first still took 82, 69 and 72 ms at n = 768,
      // then 43–50).
      for (let warm = 0; warm < (n <= 1024 ? 3 : 1); warm++) await solver.solve(a.slice(), n, r, rhs, `bench n=${n} (warm-up)`);
      // A solve at n ≤ 1024 takes tens of milliseconds, where this shared machine's spread between runs is ±20 %: nine
      // runs there (on both sides), three of the larger sizes.
      const runs = context.quick ? 2 : n <= 1024 ? 9 : 3;
      for (let run = 0; run < runs; run++) {
        const copy = a.slice();
        const t = performance.now();
        const result = await solver.solve(copy, n, r, rhs, `bench n=${n}`);
        ours.push(performance.now() - t);
        x = result.x;
        residual = result.relativeResidual;
      }
      await solver.release();
      // The pure-TS baseline is slow (tens of seconds at n=4096): one run at the largest sizes.
      const baselineRuns = n <= 768 ? 3 : 1;
      const baseline: number[] = [];
      let reference: Float64Array = new Float64Array(0);
      for (let run = 0; run < baselineRuns; run++) {
        const t = performance.now();
        reference = referenceSolve(a, n, r, rhs);
        baseline.push(performance.now() - t);
      }
      let diff = 0;
      let norm = 0;
      for (let i = 0; i < x.length; i++) {
        diff += (x[i]! - reference[i]!) ** 2;
        norm += reference[i]! ** 2;
      }
      let lapackMs: number | null = null;
      let lapackMethod = 'skipped: python3 with numpy not found';
      let lapackKernel: string | null = null;
      if (python) {
        const files = ['a', 'r', 'x'].map((f) => join(dir, `${f}-${n}.f64`));
        writeFileSync(files[0]!, new Uint8Array(a.buffer));
        writeFileSync(files[1]!, new Uint8Array(r.buffer));
        writeFileSync(files[2]!, new Uint8Array(x.buffer));
        const out = spawnSync('python3', [join(import.meta.dirname, 'lapack_solve.py'), String(n), String(rhs), ...files, String(runs)], {
          encoding: 'utf8',
          env: lapackEnvironment(context.threads),
        });
        if (out.status === 0) {
          const parsed = JSON.parse(out.stdout.trim()) as { ms: number; method: string; kernel: string };
          lapackMs = parsed.ms;
          lapackMethod = parsed.method;
          lapackKernel = parsed.kernel;
          if (!kernels.includes(parsed.kernel)) kernels.push(parsed.kernel);
        } else lapackMethod = `failed: ${out.stderr.trim().split('\n').at(-1) ?? ''}`;
      }
      const ms = median(ours);
      const baselineMs = median(baseline);
      const flops = n ** 3 / 3 + 2 * n * n * rhs;
      const gflops = flops / (ms / 1000) / 1e9;
      context.emit({
        bench: 'solve',
        n,
        rhs,
        ms,
        baselineMs,
        gflops,
        lapackMs,
        lapackMethod,
        lapackKernel,
        relativeErrorVsReference: Math.sqrt(diff / norm),
        relativeResidual: residual,
      });
      rows.push([
        n,
        rhs,
        ms.toFixed(0),
        gflops.toFixed(1),
        baselineMs.toFixed(0),
        (baselineMs / ms).toFixed(1),
        lapackMs === null ? '-' : lapackMs.toFixed(0),
        lapackMs === null ? '-' : (ms / lapackMs).toFixed(2),
        Math.sqrt(diff / norm).toExponential(1),
      ]);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  context.print(
    `solve: RegMean per-layer solve, float64, ${rhs} right-hand sides, ${context.threads} threads (medians: of 9 runs at n ≤ 1024, of 3 above, LAPACK alike)\n` +
      table(['n', 'rhs', 'gramfuse ms', 'GFLOP/s', 'pure-TS ms', 'TS/gramfuse', 'LAPACK ms', 'gramfuse/LAPACK', 'rel.err vs TS'], rows) +
      `\nLAPACK baseline: ${python ? `scipy/numpy, same thread count, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for it alone; kernel: ${kernels.join('; ')}` : 'skipped (python3 with numpy not found)'}; goal: gramfuse/LAPACK <= 2.`,
  );
}
