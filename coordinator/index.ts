/** coordinator/: receives statistics, sums, solves and writes the merged model. Public entry. */
export { CommitBatch, storeChunk } from './intake/index.js';
export {
  type ChunkIn,
  checkTransition,
  Coordinator,
  type CoordinatorOptions,
  type JobView,
  type Receipt,
  type ReceiptFields,
  TRANSITIONS,
} from './jobs/index.js';
export {
  type Action,
  authorize,
  type AuthorizationConfig,
  canSee,
  type CoordinatorServer,
  type CoordinatorServerOptions,
  decodeChunk,
  type ServerState,
  type ServerTls,
  startCoordinatorServer,
} from './server/index.js';
export {
  CHECK_PROJECTIONS,
  checkTolerance,
  DEFAULT_RESIDUAL_TOLERANCE,
  readFloat64File,
  type SolveExecutor,
  verifySolution,
  workerThreadExecutor,
} from './solve/index.js';
export { FileStore, type StatisticStore } from './store/index.js';
