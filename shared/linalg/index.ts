/** shared/linalg/: the SPD solver contract (SpdSolver) and its onnxruntime float64 kernels; dense float64 references. */
export {
  choleskyInPlace,
  frobenius,
  invertLower,
  matmul,
  mirrorUpper,
  packedLength,
  packUpper,
  referenceSolve,
  unpackSymmetric,
} from './dense.js';
export { solverProbeModel } from './kernel-graphs.js';
export { createOrtSolver, DEFAULT_JITTER_STEPS, matmulNative, type OrtSolverOptions } from './ort-solver.js';
export type { SolveDiagnostics, SolveResult, SpdSolver } from './spd-solver.js';
