/**
 * shared/hf/: Hugging Face checkpoint directories in (DESIGN.md §2, §7): config.json parsed with zod, the safetensors
 * tensors located (sharded or not, every header checked), and one builder per architecture family that turns the
 * directory into the ONNX graph the rest of gramfuse analyses, instruments, runs and merges — float32 weights as
 * external data pointing at the checkpoint's own bytes. After `buildHfModel`, nothing knows the model came from a
 * directory.
 */
export { buildHfModel, type BuiltHfModel, HF_ARCHITECTURE_KEY } from './build.js';
export { type CheckpointTensorLocation, isHfDirectory, locateCheckpointTensors } from './checkpoint-files.js';
export {
  configArchitecture,
  type DecoderConfig,
  type EncoderConfig,
  type HfModelConfig,
  parseHfConfig,
  type RopeScaling,
  rotaryInverseFrequencies,
  SUPPORTED_ARCHITECTURES,
  type SupportedArchitecture,
} from './config.js';
