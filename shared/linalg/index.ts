export { choleskyInPlace, frobenius, invertLower, matmul, packedLength, packUpper, referenceSolve, unpackSymmetric } from './dense.js';
export {
  createOrtSolver,
  DEFAULT_JITTER_STEPS,
  matmulNative,
  type OrtSolverOptions,
  type SolveDiagnostics,
  type SolveResult,
  type SpdSolver,
} from './ort-solver.js';
