import { ErrorCode, GramfuseError } from './errors.js';

/**
 * The one dtype table: gramfuse name ↔ ONNX element type ↔ typed array ↔ byte width. A dtype missing
 * here is an explicit UNSUPPORTED_DTYPE error wherever it is met.
 */
export type Dtype =
  'float32' | 'float64' | 'float16' | 'bfloat16' | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64' | 'bool';

export interface DtypeInfo {
  readonly dtype: Dtype;
  /** TensorProto.DataType value. */
  readonly onnx: number;
  readonly bytes: number;
  /** Floating point: a candidate parameter. Integer and bool tensors are structure. */
  readonly float: boolean;
  /** The name onnxruntime-node uses for tensors of this type. */
  readonly ort: string;
}

const table: readonly DtypeInfo[] = [
  { dtype: 'float32', onnx: 1, bytes: 4, float: true, ort: 'float32' },
  { dtype: 'uint8', onnx: 2, bytes: 1, float: false, ort: 'uint8' },
  { dtype: 'int8', onnx: 3, bytes: 1, float: false, ort: 'int8' },
  { dtype: 'uint16', onnx: 4, bytes: 2, float: false, ort: 'uint16' },
  { dtype: 'int16', onnx: 5, bytes: 2, float: false, ort: 'int16' },
  { dtype: 'int32', onnx: 6, bytes: 4, float: false, ort: 'int32' },
  { dtype: 'int64', onnx: 7, bytes: 8, float: false, ort: 'int64' },
  { dtype: 'bool', onnx: 9, bytes: 1, float: false, ort: 'bool' },
  { dtype: 'float16', onnx: 10, bytes: 2, float: true, ort: 'float16' },
  { dtype: 'float64', onnx: 11, bytes: 8, float: true, ort: 'float64' },
  { dtype: 'uint32', onnx: 12, bytes: 4, float: false, ort: 'uint32' },
  { dtype: 'uint64', onnx: 13, bytes: 8, float: false, ort: 'uint64' },
  { dtype: 'bfloat16', onnx: 16, bytes: 2, float: true, ort: 'bfloat16' },
];

const byName = new Map(table.map((info) => [info.dtype, info]));
const byOnnx = new Map(table.map((info) => [info.onnx, info]));

export function dtypeInfo(dtype: Dtype): DtypeInfo {
  const info = byName.get(dtype);
  if (info === undefined) throw unsupported(String(dtype), 'dtype');
  return info;
}

/** The dtype of an ONNX element type; `what` names the tensor for the error message. */
export function dtypeFromOnnx(elemType: number, what: string): DtypeInfo {
  const info = byOnnx.get(elemType);
  if (info === undefined) throw unsupported(`ONNX element type ${elemType}`, what);
  return info;
}

export function isDtype(value: string): value is Dtype {
  return byName.has(value as Dtype);
}

function unsupported(found: string, what: string): GramfuseError {
  const known = table.map((info) => info.dtype).join(', ');
  return new GramfuseError(ErrorCode.UnsupportedDtype, `${what}: unsupported element type ${found}; gramfuse handles ${known}`, {
    facts: { found, what },
  });
}

/** A little-endian byte view of a float32 tensor as numbers (copies only when unaligned). */
export function bytesToFloat32(bytes: Uint8Array): Float32Array {
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  return new Float32Array(new Uint8Array(bytes).buffer); // a copy (Buffer.slice would be a view)
}

export function bytesToFloat64(bytes: Uint8Array): Float64Array {
  if (bytes.byteOffset % 8 === 0) return new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8);
  return new Float64Array(new Uint8Array(bytes).buffer);
}

export function typedArrayBytes(array: ArrayBufferView): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}
