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

/** Float dtypes gramfuse reads and writes parameter values in. */
export type FloatDtype = 'float32' | 'float64' | 'float16' | 'bfloat16';

export function isFloatDtype(dtype: Dtype): dtype is FloatDtype {
  return dtype === 'float32' || dtype === 'float64' || dtype === 'float16' || dtype === 'bfloat16';
}

/** IEEE binary16 and bfloat16 as (exponent bits, mantissa bits): both are decoded and encoded by one rule. */
const HALF_FORMATS = { float16: { exponent: 5, mantissa: 10 }, bfloat16: { exponent: 8, mantissa: 7 } } as const;
const halfTables = new Map<'float16' | 'bfloat16', Float64Array>();

/** All 65536 values of a 16-bit float format, decoded once (512 KiB) and kept. */
function halfTable(dtype: 'float16' | 'bfloat16'): Float64Array {
  let table = halfTables.get(dtype);
  if (table !== undefined) return table;
  const { exponent, mantissa } = HALF_FORMATS[dtype];
  const bias = 2 ** (exponent - 1) - 1;
  const maxExponent = 2 ** exponent - 1;
  table = new Float64Array(65536);
  for (let bits = 0; bits < 65536; bits++) {
    const sign = bits & 0x8000 ? -1 : 1;
    const e = (bits >> mantissa) & maxExponent;
    const m = bits & ((1 << mantissa) - 1);
    table[bits] =
      e === 0
        ? sign * m * 2 ** (1 - bias - mantissa)
        : e === maxExponent
          ? m === 0
            ? sign * Infinity
            : NaN
          : sign * (1 + m / 2 ** mantissa) * 2 ** (e - bias);
  }
  halfTables.set(dtype, table);
  return table;
}

/** Rounds half to even (the IEEE default): 2.5 → 2, 3.5 → 4. */
function roundHalfEven(value: number): number {
  const floor = Math.floor(value);
  const rest = value - floor;
  if (rest > 0.5) return floor + 1;
  if (rest < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** One float64 as the bits of a 16-bit float format, rounded to nearest even; overflow gives ±Infinity. */
function encodeHalf(value: number, exponent: number, mantissa: number): number {
  if (Number.isNaN(value)) return ((2 ** exponent - 1) << mantissa) | (1 << (mantissa - 1));
  const sign = value < 0 || Object.is(value, -0) ? 0x8000 : 0;
  const magnitude = Math.abs(value);
  const bias = 2 ** (exponent - 1) - 1;
  const infinity = (2 ** exponent - 1) << mantissa;
  const minNormal = 2 ** (1 - bias);
  if (magnitude === Infinity) return sign | infinity;
  if (magnitude < minNormal) {
    // Subnormal (or zero): a multiple of the smallest step; 2^mantissa rounds up into the smallest normal.
    return sign | roundHalfEven(magnitude * 2 ** (bias - 1 + mantissa));
  }
  let e = Math.floor(Math.log2(magnitude));
  if (2 ** e > magnitude) e--;
  else if (2 ** (e + 1) <= magnitude) e++;
  const m = roundHalfEven((magnitude / 2 ** e - 1) * 2 ** mantissa); // a carry into the exponent adds correctly
  const bits = ((e + bias) << mantissa) + m;
  return sign | Math.min(bits, infinity);
}

/** Little-endian values of a float tensor as float64 (float16 and bfloat16 through a decoded table). */
export function decodeFloats(bytes: Uint8Array, dtype: FloatDtype): Float64Array {
  if (dtype === 'float32') return Float64Array.from(bytesToFloat32(bytes));
  if (dtype === 'float64') return bytesToFloat64(bytes).slice();
  const table = halfTable(dtype);
  const out = new Float64Array(bytes.byteLength / 2);
  for (let i = 0; i < out.length; i++) out[i] = table[bytes[2 * i]! | (bytes[2 * i + 1]! << 8)]!;
  return out;
}

/**
 * float64 values as little-endian bytes of `dtype`, rounded to nearest even. Values past the format's range
 * become ±Infinity here: callers check finiteness of the encoded values (`decodeFloats`) where it matters.
 */
export function encodeFloats(values: Float64Array, dtype: FloatDtype): Uint8Array {
  if (dtype === 'float64') return typedArrayBytes(Float64Array.from(values));
  if (dtype === 'float32') return typedArrayBytes(Float32Array.from(values));
  const { exponent, mantissa } = HALF_FORMATS[dtype];
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = encodeHalf(values[i]!, exponent, mantissa);
  return typedArrayBytes(out);
}

/** Bytes per value of a float dtype. */
export function floatWidth(dtype: FloatDtype): 2 | 4 | 8 {
  return dtype === 'float64' ? 8 : dtype === 'float32' ? 4 : 2;
}
