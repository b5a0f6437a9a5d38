/** shared/: code both the agent and the coordinator use. The only entry other folders import. */
export {
  bytesToFloat32,
  bytesToFloat64,
  type Dtype,
  dtypeFromOnnx,
  dtypeInfo,
  type DtypeInfo,
  isDtype,
  typedArrayBytes,
} from './dtypes.js';
export {
  ErrorCode,
  type ErrorFacts,
  errorFromGrpc,
  exitCodeByErrorCode,
  fileError,
  GramfuseError,
  type GramfuseErrorOptions,
  grpcStatusByErrorCode,
  isGramfuseError,
  toGramfuseError,
} from './errors.js';
export * from './onnx/index.js';
export * from './linalg/index.js';
export * from './merge/index.js';
export { formatBytes, formatTable } from './text-format.js';
export * from './security/index.js';
export * from './federation/index.js';
export { packageVersion } from './version.js';
export { ensureDirectoryFor, syncDirectory, writeAll, writeFileAtomic } from './atomic-file.js';
export * from './audit/index.js';
export { callWorker, startWorker, type WorkerMessage } from './worker-thread.js';
export * from './events/index.js';
export * from './nats/index.js';
export { failpoint } from './failpoint.js';
