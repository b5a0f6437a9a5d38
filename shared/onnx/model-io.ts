import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, isAbsolute, join, normalize, resolve } from 'node:path';

import { GraphProto, ModelProto, TensorProto } from '../../proto/index.js';
import { dtypeFromOnnx, typedArrayBytes } from '../dtypes.js';
import { ensureDirectoryFor, writeAll, writeFileAtomic } from '../atomic-file.js';
import { ErrorCode, fileError, GramfuseError } from '../errors.js';
import { buildHfModel } from '../hf/index.js';

/** An ONNX model in memory, with where its external data lives. */
export interface OnnxModel {
  readonly proto: ModelProto;
  /** Directory that external-data `location`s are relative to (the model file's directory). */
  readonly baseDir: string | undefined;
  /** Where it was loaded from, for messages; `<bytes>` when loaded from memory. */
  readonly source: string;
}

export interface LoadModelOptions {
  /** Directory for external data when loading from bytes. Default: none (external tensors fail to read). */
  readonly baseDir?: string;
}

/** Protobuf's hard limit for one message; models past it must keep tensors in external data. */
export const PROTOBUF_LIMIT_BYTES = 2 ** 31 - 1;

/**
 * The most bytes of one tensor gramfuse holds in memory at once (`tensorBytes`): one read of Node's fs takes at most
 * 2 GiB − 1 (past it Node aborts natively). A larger tensor is refused with ONNX_EXTERNAL_DATA where it must be
 * whole, and read in slices (`tensorByteSlices`) where a pass over it is enough (hashing).
 */
export const MAX_TENSOR_READ_BYTES = 2 ** 31 - 1;

/** The slice `tensorByteSlices` reads at a time by default. */
export const TENSOR_SLICE_BYTES = 64 * 2 ** 20;

/**
 * Loads an ONNX model from a path or from bytes, or builds one from a Hugging Face checkpoint directory (config.json +
 * safetensors). External tensor data stays on disk until read.
 */
export async function loadModel(source: string | Uint8Array, options: LoadModelOptions = {}): Promise<OnnxModel> {
  // A Hugging Face checkpoint directory is built into the same kind of graph (shared/hf); nothing after this knows.
  if (typeof source === 'string' && (await stat(source).catch(() => undefined))?.isDirectory() === true)
    return (await buildHfModel(source)).model;
  let bytes: Uint8Array;
  let label: string;
  let baseDir = options.baseDir;
  if (typeof source === 'string') {
    label = source;
    try {
      bytes = await readFile(source);
    } catch (error) {
      throw fileError(error, source, 'reading the model');
    }
    baseDir ??= dirname(resolve(source));
  } else {
    label = '<bytes>';
    bytes = source;
  }
  return { proto: decodeModel(bytes, label), baseDir, source: label };
}

function decodeModel(bytes: Uint8Array, label: string): ModelProto {
  const notOnnx = (reason: string, cause?: unknown): GramfuseError =>
    new GramfuseError(ErrorCode.OnnxMalformed, `${label}: not a valid ONNX model (${reason}); export it again or check the path`, {
      facts: { path: label, bytes: bytes.byteLength },
      cause,
    });
  if (bytes.byteLength === 0) throw notOnnx('the file is empty');
  let proto: ModelProto;
  try {
    proto = ModelProto.decode(bytes);
  } catch (error) {
    throw notOnnx(`protobuf decoding failed: ${(error as Error).message}; the file may be truncated`, error);
  }
  if (proto.irVersion === undefined || proto.graph === undefined) {
    throw notOnnx('no IR version or no graph');
  }
  if (proto.opsetImport.length === 0) throw notOnnx('no opset import');
  for (const tensor of proto.graph.initializer) {
    if (tensor.name === undefined || tensor.dataType === undefined) throw notOnnx('an initializer without name or type');
  }
  return proto;
}

/** Element count of a tensor from its dims. */
export function tensorElementCount(tensor: TensorProto): number {
  let count = 1;
  for (const dim of tensor.dims) count *= Number(dim);
  return count;
}

export function tensorShape(tensor: TensorProto): number[] {
  return tensor.dims.map(Number);
}

export function isExternal(tensor: TensorProto): boolean {
  return tensor.dataLocation === 1;
}

interface ExternalLocation {
  readonly location: string;
  readonly offset: number;
  readonly length: number | undefined;
}

function externalLocation(tensor: TensorProto): ExternalLocation {
  const entries = new Map(tensor.externalData.map((entry) => [entry.key ?? '', entry.value ?? '']));
  const location = entries.get('location');
  if (location === undefined || location === '') {
    throw new GramfuseError(ErrorCode.OnnxExternalData, `tensor ${tensor.name ?? '?'}: external data without a location`, {
      facts: { tensor: tensor.name ?? null },
    });
  }
  // A byte count from the file: a whole number, never NaN, negative, fractional or past 2^53 (a negative position is
  // "the current position" to fs.read, and NaN reads whatever comes next).
  const byteCount = (key: string, text: string): number => {
    const value = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(value))
      throw new GramfuseError(
        ErrorCode.OnnxExternalData,
        `tensor ${tensor.name ?? '?'}: external data ${key} ${JSON.stringify(text)} is not a whole number of bytes; the model file is damaged`,
        { facts: { tensor: tensor.name ?? null, [key]: text } },
      );
    return value;
  };
  const lengthText = entries.get('length');
  return {
    location,
    offset: byteCount('offset', entries.get('offset') ?? '0'),
    length: lengthText === undefined ? undefined : byteCount('length', lengthText),
  };
}

/**
 * The tensor's value as little-endian bytes, wherever it is stored: `raw_data`, a typed field, or an
 * external file (read for this tensor alone). Checks the byte count against dims × element width.
 */
export function tensorBytes(model: OnnxModel, tensor: TensorProto): Uint8Array {
  const name = tensor.name ?? '?';
  const info = dtypeFromOnnx(tensor.dataType ?? 0, `tensor ${name}`);
  const expected = tensorElementCount(tensor) * info.bytes;
  let bytes: Uint8Array;
  if (isExternal(tensor)) {
    bytes = readExternal(model, tensor, expected);
  } else if (tensor.rawData !== undefined) {
    bytes = tensor.rawData;
  } else {
    bytes = typedFieldBytes(tensor, info.dtype);
  }
  if (bytes.byteLength !== expected) {
    throw new GramfuseError(
      ErrorCode.OnnxMalformed,
      `tensor ${name}: holds ${bytes.byteLength} bytes but its shape [${tensorShape(tensor).join(', ')}] of ${info.dtype} needs ${expected}; the model file is damaged`,
      { facts: { tensor: name, bytes: bytes.byteLength, expected } },
    );
  }
  return bytes;
}

function readExternal(model: OnnxModel, tensor: TensorProto, expected: number): Uint8Array {
  const name = tensor.name ?? '?';
  if (expected > MAX_TENSOR_READ_BYTES)
    throw new GramfuseError(
      ErrorCode.OnnxExternalData,
      `tensor ${name}: ${expected} bytes, past the ${MAX_TENSOR_READ_BYTES} bytes (2 GiB − 1) gramfuse can hold of one tensor here; split the tensor, or keep it out of this step`,
      { facts: { tensor: name, bytes: expected, limit: MAX_TENSOR_READ_BYTES } },
    );
  const { fd, path, offset } = openExternal(model, tensor, expected);
  try {
    const buffer = Buffer.allocUnsafe(expected);
    readFully(fd, buffer, offset, path, name);
    return buffer;
  } finally {
    closeSync(fd);
  }
}

/** Fills `buffer` from `position` (short reads continued; the range was checked against the file's size). */
function readFully(fd: number, buffer: Uint8Array, position: number, path: string, name: string): void {
  let done = 0;
  while (done < buffer.byteLength) {
    const read = readSync(fd, buffer, done, buffer.byteLength - done, position + done);
    if (read === 0)
      throw new GramfuseError(ErrorCode.OnnxExternalData, `tensor ${name}: external data file ${path} ended early; copy it again`, {
        facts: { tensor: name, path },
      });
    done += read;
  }
}

/**
 * A tensor's value as little-endian bytes, `sliceBytes` at a time (its stored bytes: inline ones in one piece, external
 * ones read from the side file a slice at a time, whatever the tensor's size — past 2 GiB too). The byte count is
 * checked against dims × element width, as `tensorBytes` does.
 */
export function* tensorByteSlices(model: OnnxModel, tensor: TensorProto, sliceBytes = TENSOR_SLICE_BYTES): Generator<Uint8Array> {
  const name = tensor.name ?? '?';
  const expected = tensorElementCount(tensor) * dtypeFromOnnx(tensor.dataType ?? 0, `tensor ${name}`).bytes;
  if (!isExternal(tensor)) {
    yield tensorBytes(model, tensor);
    return;
  }
  const { fd, path, offset } = openExternal(model, tensor, expected);
  try {
    const slice = Math.max(1, Math.min(sliceBytes, expected, MAX_TENSOR_READ_BYTES));
    const buffer = Buffer.allocUnsafe(slice);
    for (let at = 0; at < expected; at += slice) {
      const part = buffer.subarray(0, Math.min(slice, expected - at));
      readFully(fd, part, offset + at, path, name);
      yield part;
    }
  } finally {
    closeSync(fd);
  }
}

/** The side file of an external tensor, opened, with its range checked: inside the model's directory and the file. */
function openExternal(model: OnnxModel, tensor: TensorProto, expected: number): { fd: number; path: string; offset: number } {
  const name = tensor.name ?? '?';
  const { location, offset, length } = externalLocation(tensor);
  if (length !== undefined && length !== expected)
    throw new GramfuseError(
      ErrorCode.OnnxExternalData,
      `tensor ${name}: external data length ${length}, but its shape [${tensorShape(tensor).join(', ')}] needs ${expected} bytes; the model file is damaged`,
      { facts: { tensor: name, length, expected } },
    );
  if (model.baseDir === undefined) {
    throw new GramfuseError(
      ErrorCode.OnnxExternalData,
      `tensor ${name}: stored in external file ${location}, but the model was loaded from bytes without a baseDir; load it from its path`,
      { facts: { tensor: name, location } },
    );
  }
  const normalized = normalize(location);
  if (isAbsolute(normalized) || normalized.startsWith('..')) {
    throw new GramfuseError(
      ErrorCode.OnnxExternalData,
      `tensor ${name}: external location ${location} leaves the model's directory; refusing to read it`,
      {
        facts: { tensor: name, location },
      },
    );
  }
  const path = join(model.baseDir, normalized);
  const byteCount = expected;
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    throw new GramfuseError(
      ErrorCode.OnnxExternalData,
      `tensor ${name}: external data file ${path} cannot be opened (${(error as Error).message}); copy it next to the model`,
      { facts: { tensor: name, path }, cause: error },
    );
  }
  try {
    const size = fstatSync(fd).size;
    if (offset + byteCount > size) {
      throw new GramfuseError(
        ErrorCode.OnnxExternalData,
        `tensor ${name}: external data file ${path} has ${size} bytes, the tensor needs bytes ${offset}..${offset + byteCount}; the file is truncated or not the model's`,
        { facts: { tensor: name, path, size, offset, length: byteCount } },
      );
    }
  } catch (error) {
    closeSync(fd);
    throw error;
  }
  return { fd, path, offset };
}

function typedFieldBytes(tensor: TensorProto, dtype: string): Uint8Array {
  switch (dtype) {
    case 'float32':
      return typedArrayBytes(Float32Array.from(tensor.floatData));
    case 'float64':
      return typedArrayBytes(Float64Array.from(tensor.doubleData));
    case 'int64':
      return typedArrayBytes(BigInt64Array.from(tensor.int64Data));
    case 'uint64':
      return typedArrayBytes(BigUint64Array.from(tensor.uint64Data));
    case 'uint32':
      return typedArrayBytes(Uint32Array.from(tensor.uint64Data, Number));
    case 'int32':
      return typedArrayBytes(Int32Array.from(tensor.int32Data));
    case 'int16':
      return typedArrayBytes(Int16Array.from(tensor.int32Data));
    case 'uint16':
    case 'float16':
    case 'bfloat16':
      return typedArrayBytes(Uint16Array.from(tensor.int32Data));
    case 'int8':
      return typedArrayBytes(Int8Array.from(tensor.int32Data));
    case 'uint8':
    case 'bool':
      return Uint8Array.from(tensor.int32Data);
    default:
      throw new GramfuseError(ErrorCode.UnsupportedDtype, `tensor ${tensor.name ?? '?'}: cannot read ${dtype} values from typed fields`, {
        facts: { tensor: tensor.name ?? null, dtype },
      });
  }
}

/** A copy of `tensor` holding `bytes` in raw_data (never typed arrays), with no external reference. */
export function tensorWithBytes(tensor: TensorProto, bytes: Uint8Array): TensorProto {
  return {
    ...tensor,
    rawData: bytes,
    floatData: [],
    int32Data: [],
    int64Data: [],
    doubleData: [],
    uint64Data: [],
    stringData: [],
    externalData: [],
    dataLocation: undefined,
  };
}

export interface SaveModelOptions {
  /**
   * Where tensor values go. `auto` (default): inline unless the model would pass protobuf's 2 GB limit;
   * `always`: tensors of at least `externalThresholdBytes` go to one side file; `never`: all inline.
   */
  readonly externalData?: 'auto' | 'always' | 'never';
  /** Side file name, relative to the model's directory. Default: `<model file name>.data`. */
  readonly externalDataFile?: string;
  /** Smallest tensor moved to the side file. Default 1024 bytes. */
  readonly externalThresholdBytes?: number;
  /**
   * Where each tensor's value comes from, asked for one tensor at a time (so a model of any size is written
   * without holding its tensors). Default: the model's own (`tensorBytes`).
   */
  readonly tensorBytes?: (tensor: TensorProto) => Promise<Uint8Array>;
}

/**
 * The model metadata key holding the SHA-256 of its external-data file, written by `saveModel`: the model file's
 * own digest then vouches for its side file too (a download checks the side file against it).
 */
export const EXTERNAL_DATA_SHA256_KEY = 'gramfuse.external_data_sha256';

/** The side file a model's tensors live in, with its recorded SHA-256 (undefined when the model is inline). */
export function externalDataFile(model: OnnxModel): { location: string; sha256: string | undefined } | undefined {
  const locations = new Set<string>();
  for (const tensor of model.proto.graph?.initializer ?? []) if (isExternal(tensor)) locations.add(externalLocation(tensor).location);
  if (locations.size === 0) return undefined;
  if (locations.size > 1)
    throw new GramfuseError(
      ErrorCode.OnnxExternalData,
      `${model.source}: tensors in ${locations.size} side files (${[...locations].slice(0, 3).join(', ')}); gramfuse moves models with one`,
      { facts: { files: locations.size } },
    );
  const sha256 = model.proto.metadataProps.find((p) => p.key === EXTERNAL_DATA_SHA256_KEY)?.value;
  return { location: [...locations][0]!, sha256 };
}

/** Bytes the model would take inline (tensor payloads + the rest), without reading external data. */
export function inlineSizeEstimate(model: OnnxModel): number {
  const graph = model.proto.graph!;
  let total = ModelProto.encode({ ...model.proto, graph: { ...graph, initializer: [] } }).finish().byteLength;
  for (const tensor of graph.initializer) {
    total += tensorElementCount(tensor) * dtypeFromOnnx(tensor.dataType ?? 0, `tensor ${tensor.name ?? '?'}`).bytes + 256;
  }
  return total;
}

/**
 * Saves a model atomically: everything is written to temporary files beside the target and renamed
 * into place at the end, so a failure never leaves a partial model that looks complete.
 */
export async function saveModel(model: OnnxModel, path: string, options: SaveModelOptions = {}): Promise<void> {
  await ensureDirectoryFor(path);
  const dir = dirname(resolve(path));
  const mode = options.externalData ?? 'auto';
  const external = mode === 'always' || (mode === 'auto' && inlineSizeEstimate(model) > PROTOBUF_LIMIT_BYTES - 64 * 1024 * 1024);
  const suffix = `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmpModel = `${path}${suffix}`;
  const dataName = options.externalDataFile ?? `${basename(path)}.data`;
  const dataPath = join(dir, dataName);
  const tmpData = `${dataPath}${suffix}`;
  const graph = model.proto.graph!;
  const source = options.tensorBytes ?? ((tensor: TensorProto) => Promise.resolve(tensorBytes(model, tensor)));
  try {
    let initializers: TensorProto[];
    let metadataProps = model.proto.metadataProps.filter((p) => p.key !== EXTERNAL_DATA_SHA256_KEY);
    if (external) {
      const written = await writeExternalData(
        graph.initializer,
        options.tensorBytes === undefined
          ? (t) => Promise.resolve(isExternal(t) ? tensorWithBytes(t, tensorBytes(model, t)) : t)
          : async (t) => tensorWithBytes(t, await source(t)),
        tmpData,
        dataName,
        options.externalThresholdBytes ?? 1024,
      );
      initializers = written.tensors;
      metadataProps = [...metadataProps, { key: EXTERNAL_DATA_SHA256_KEY, value: written.sha256 }];
    } else {
      initializers = []; // inline: no side file, so no side file digest (filtered above)
      for (const tensor of graph.initializer)
        initializers.push(options.tensorBytes !== undefined || isExternal(tensor) ? tensorWithBytes(tensor, await source(tensor)) : tensor);
    }
    const proto: ModelProto = { ...model.proto, metadataProps, graph: { ...graph, initializer: initializers } };
    const bytes = ModelProto.encode(proto).finish();
    const handle = await open(tmpModel, 'w');
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (external) await rename(tmpData, dataPath);
    await rename(tmpModel, path);
  } catch (error) {
    await rm(tmpModel, { force: true });
    await rm(tmpData, { force: true });
    if (error instanceof GramfuseError) throw error;
    throw fileError(error, path, 'writing the model');
  }
}

const EXTERNAL_ALIGNMENT = 4096;

/** Writes the tensors of at least `threshold` bytes into one side file, page-aligned, hashing the file as written. */
async function writeExternalData(
  tensors: readonly TensorProto[],
  /** Each tensor with its value inline (raw or typed fields), asked for one at a time. */
  inline: (tensor: TensorProto) => Promise<TensorProto>,
  tmpPath: string,
  location: string,
  threshold: number,
): Promise<{ tensors: TensorProto[]; sha256: string }> {
  await mkdir(dirname(tmpPath), { recursive: true });
  const handle = await open(tmpPath, 'w');
  const hash = createHash('sha256');
  try {
    let offset = 0;
    const out: TensorProto[] = [];
    for (const tensor of tensors) {
      const info = dtypeFromOnnx(tensor.dataType ?? 0, `tensor ${tensor.name ?? '?'}`);
      const expected = tensorElementCount(tensor) * info.bytes;
      const value = await inline(tensor);
      if (expected < threshold) {
        out.push(value);
        continue;
      }
      const bytes = value.rawData ?? typedFieldBytes(value, info.dtype);
      if (bytes.byteLength !== expected)
        throw new GramfuseError(ErrorCode.Internal, `tensor ${tensor.name ?? '?'}: ${bytes.byteLength} bytes, its shape needs ${expected}`);
      // Page-aligned offsets let runtimes memory-map each tensor; the gap is zeros, hashed like the rest.
      const aligned = Math.ceil(offset / EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT;
      if (aligned > offset) {
        const gap = new Uint8Array(aligned - offset);
        await writeAll(handle, gap, offset);
        hash.update(gap);
      }
      offset = aligned;
      await writeAll(handle, bytes, offset);
      hash.update(bytes);
      out.push({
        ...tensorWithBytes(tensor, new Uint8Array(0)),
        rawData: undefined,
        dataLocation: 1,
        externalData: [
          { key: 'location', value: location },
          { key: 'offset', value: String(offset) },
          { key: 'length', value: String(bytes.byteLength) },
        ],
      });
      offset += bytes.byteLength;
    }
    await handle.sync();
    return { tensors: out, sha256: hash.digest('hex') };
  } finally {
    await handle.close();
  }
}

/** The model as ONNX bytes (in memory; external tensors stay external). */
export function serializeModel(model: OnnxModel): Uint8Array {
  return ModelProto.encode(model.proto).finish();
}

const varint = (value: number): Uint8Array => {
  const out: number[] = [];
  let v = value;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return Uint8Array.from(out);
};
/** The tag byte of a length-delimited protobuf field (field numbers < 16). */
const lengthTag = (field: number): Uint8Array => Uint8Array.of((field << 3) | 2);

/**
 * Saves a model inline (one .onnx file) without ever holding all its tensors: the graph is written
 * without initializers, then each initializer is appended as its own length-delimited field with its bytes
 * from `bytesOf` (read when its turn comes). Protobuf lets fields come in any order, so onnxruntime and
 * `loadModel` read it like any model. For models under protobuf's 2 GB limit; atomic like saveModel.
 * Field numbers from onnx.proto: ModelProto.graph = 7, GraphProto.initializer = 5, TensorProto.raw_data = 9.
 */
export async function saveModelStreamed(
  model: OnnxModel,
  path: string,
  bytesOf: (tensor: TensorProto) => Promise<Uint8Array>,
): Promise<void> {
  await ensureDirectoryFor(path);
  const graph = model.proto.graph!;
  // Written inline: a side file's digest the source model recorded does not describe this file.
  const metadataProps = model.proto.metadataProps.filter((p) => p.key !== EXTERNAL_DATA_SHA256_KEY);
  const head = ModelProto.encode({ ...model.proto, metadataProps, graph: undefined }).finish();
  const graphHead = GraphProto.encode({ ...graph, initializer: [] }).finish();
  const tensors = graph.initializer.map((tensor) => {
    const info = dtypeFromOnnx(tensor.dataType ?? 0, `tensor ${tensor.name ?? '?'}`);
    const payload = tensorElementCount(tensor) * info.bytes;
    // The tensor's own fields, inline and without raw_data (written after them with the bytes).
    const bare = TensorProto.encode({ ...tensorWithBytes(tensor, new Uint8Array(0)), rawData: undefined }).finish();
    const length = bare.byteLength + 1 + varint(payload).byteLength + payload;
    return { tensor, bare, payload, length };
  });
  const graphLength = graphHead.byteLength + tensors.reduce((sum, t) => sum + 1 + varint(t.length).byteLength + t.length, 0);
  if (head.byteLength + 1 + varint(graphLength).byteLength + graphLength > PROTOBUF_LIMIT_BYTES) {
    throw new GramfuseError(ErrorCode.Internal, `${path}: the model passes protobuf's 2 GB limit; save it with external data`);
  }
  async function* parts(): AsyncGenerator<Uint8Array> {
    yield head;
    yield lengthTag(7);
    yield varint(graphLength);
    yield graphHead;
    for (const t of tensors) {
      const bytes = await bytesOf(t.tensor);
      if (bytes.byteLength !== t.payload)
        throw new GramfuseError(
          ErrorCode.Internal,
          `tensor ${t.tensor.name ?? '?'}: ${bytes.byteLength} bytes, its shape needs ${t.payload}`,
        );
      yield lengthTag(5);
      yield varint(t.length);
      yield t.bare;
      yield lengthTag(9);
      yield varint(t.payload);
      yield bytes;
    }
  }
  await writeFileAtomic(path, parts(), 'writing the model');
}

/**
 * The model with its inline tensors moved to a side file in a private temporary directory (mode 0700), loaded back
 * graph only: onnxruntime then reads the weights from disk itself (createSession's folder option), so the process
 * holds one copy of them — onnxruntime's — instead of the decoded protobuf's beside a serialized copy per session.
 * Costs the model's size in temporary disk; `dispose` removes it. A model already kept as external data (or one
 * whose inline tensors total under `minInlineBytes`) is returned as it is.
 */
export async function withWeightsOnDisk(
  model: OnnxModel,
  minInlineBytes = 64 * 1024 * 1024,
): Promise<{ readonly model: OnnxModel; readonly dispose: () => Promise<void> }> {
  let inline = 0;
  for (const tensor of model.proto.graph!.initializer)
    if (!isExternal(tensor))
      inline += tensorElementCount(tensor) * dtypeFromOnnx(tensor.dataType ?? 0, `tensor ${tensor.name ?? '?'}`).bytes;
  if (inline < minInlineBytes) return { model, dispose: () => Promise.resolve() };
  const dir = await mkdtemp(join(tmpdir(), 'gramfuse-weights-'));
  try {
    const path = join(dir, 'model.onnx');
    await saveModel(model, path, { externalData: 'always' });
    const onDisk = await loadModel(path);
    return { model: { ...onDisk, source: model.source }, dispose: () => rm(dir, { recursive: true, force: true }) };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}
