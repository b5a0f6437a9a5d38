/** coordinator/: receives statistics, sums, solves and writes the merged model. Public entry. */
export {
  type ChunkIn,
  CommitBatch,
  Coordinator,
  type CoordinatorOptions,
  type JobView,
  type Receipt,
  type ReceiptFields,
} from './coordinator.js';
export {
  type CoordinatorServer,
  type CoordinatorServerOptions,
  decodeChunk,
  type ServerState,
  type ServerTls,
  startCoordinatorServer,
} from './server.js';
export { FileStore } from './store.js';
