// The SPD solver contract: what the merge pipeline, the coordinator and `gramfuse solver serve` call, apart from
// its onnxruntime implementation (ort-solver.ts), as onnxruntime keeps inference-session.ts apart from its -impl.

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
