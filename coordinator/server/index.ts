/** coordinator/server/: the gRPC servicer (thin handlers), the wire conversions and the one authorize(). */
export {
  type CoordinatorServer,
  type CoordinatorServerOptions,
  type ServerState,
  type ServerTls,
  startCoordinatorServer,
} from './servicer.js';
export { decodeChunk } from './wire.js';
export { type Action, authorize, type AuthorizationConfig, canSee } from './auth.js';
