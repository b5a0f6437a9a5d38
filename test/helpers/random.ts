import { seededRandom } from '../../agent/index.js';

/** Deterministic random numbers for tests (the agent's seeded generator), so a failure replays exactly. */
export const rng = seededRandom;

/** Standard normal samples (Box–Muller). */
export function randn(random: () => number, count: number): Float64Array {
  const out = new Float64Array(count);
  for (let i = 0; i < count; i += 2) {
    const u = Math.max(random(), 1e-12);
    const v = random();
    const r = Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < count) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** XᵀX for X (rows × n), float64. */
export function gramOf(x: Float64Array, rows: number, n: number): Float64Array {
  const g = new Float64Array(n * n);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < n; i++) {
      const xi = x[r * n + i]!;
      if (xi === 0) continue;
      for (let j = 0; j < n; j++) g[i * n + j] = g[i * n + j]! + xi * x[r * n + j]!;
    }
  }
  return g;
}
