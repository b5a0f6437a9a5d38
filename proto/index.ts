/**
 * The one entry to generated protobuf code (proto/gen, produced by `npm run gen`, never edited).
 * Generated types stay at the wire: domain code converts them to gramfuse's own types.
 */
export {
  AttributeProto,
  FunctionProto,
  GraphProto,
  ModelProto,
  NodeProto,
  TensorProto,
  TypeProto,
  ValueInfoProto,
} from './gen/onnx/onnx.js';
export * as federation from './gen/gramfuse/v1/federation.js';
