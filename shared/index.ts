// shared/: code both the agent and the coordinator use. This entry holds only the light helpers (errors, dtypes,
// atomic files, formatting, worker threads); each domain has its own entry (shared/onnx, shared/merge, shared/nats,
// …) so that importing one never loads onnxruntime-node or NATS for another (DESIGN.md §7).
export {
  bytesToFloat32,
  bytesToFloat64,
  decodeFloats,
  type Dtype,
  dtypeFromOnnx,
  dtypeInfo,
  type DtypeInfo,
  encodeFloats,
  type FloatDtype,
  floatWidth,
  isDtype,
  isFloatDtype,
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
  schemaProblems,
  toGramfuseError,
} from './errors.js';
export { formatBytes, formatTable, parseByteSize } from './text-format.js';
export { packageVersion } from './version.js';
export { ensureDirectoryFor, syncDirectory, writeAll, writeFileAtomic } from './atomic-file.js';
export { sha256OfFile } from './file-hash.js';
export { callWorker, PersistentWorker, startWorker, type WorkerMessage } from './worker-thread.js';
export { failpoint, faultInjected } from './failpoint.js';
