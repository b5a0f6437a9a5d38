/** shared/onnx/: ONNX model I/O (streamed, external data), graph analysis, Gram instrumentation, onnxruntime sessions. */
export { analyzeModel, headParameters, inspectReport, type InspectReport, type ModelAnalysis } from './analyze.js';
export { formGramGroups, type GramGroup } from './gram-groups.js';
export { indexGraph, type GraphIndex } from './graph-index.js';
export {
  assembleGram,
  gramBands,
  instrumentGrams,
  type GramBlock,
  type GramOutputs,
  type InstrumentedModel,
  type InstrumentOptions,
} from './instrument.js';
export { pruneToOutputs } from './prune.js';
export { type ModelTask, modelTask } from './task.js';
export { type AnalysisNote, findLinearLayers, type LinearLayer, type LinearUse, type Orientation } from './linear-layers.js';
export {
  EXTERNAL_DATA_SHA256_KEY,
  externalDataFile,
  inlineSizeEstimate,
  isExternal,
  loadModel,
  type LoadModelOptions,
  MAX_TENSOR_READ_BYTES,
  type OnnxModel,
  PROTOBUF_LIMIT_BYTES,
  saveModel,
  saveModelStreamed,
  type SaveModelOptions,
  withWeightsOnDisk,
  serializeModel,
  tensorByteSlices,
  tensorBytes,
  tensorElementCount,
  tensorShape,
  tensorWithBytes,
} from './model-io.js';
export {
  encodeFinite,
  fingerprint,
  isParameterTensor,
  listParameters,
  maxRelativeParameterDifference,
  type Parameter,
  readParameterValues,
  withParameterValues,
} from './parameters.js';
export { maskInputs, type ModelInput, modelInputs, probeFeeds, probeRowRules, type RowRule, withExtraOutputs } from './probe.js';
export {
  createSession,
  cudaProviderLibraries,
  type DeviceChoice,
  type InferenceSession,
  OrtTensor,
  resolveDevice,
  runSession,
  type SessionOptions,
  type Tensor,
} from './runtime.js';
export { type CheckpointEntry, type CheckpointMapping, checkUnique, structuralCheckpointNames } from './checkpoint-names.js';
