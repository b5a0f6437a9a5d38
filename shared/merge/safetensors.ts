import { open } from 'node:fs/promises';

import { writeFileAtomic } from '../atomic-file.js';
import type { FloatDtype } from '../dtypes.js';
import { ErrorCode, fileError, GramfuseError } from '../errors.js';

/** The safetensors dtype names gramfuse writes. */
export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16';

/** A float dtype's safetensors name. */
export const SAFETENSORS_DTYPE = { float64: 'F64', float32: 'F32', float16: 'F16', bfloat16: 'BF16' } as const satisfies Record<
  FloatDtype,
  SafetensorsDtype
>;

/** One tensor for a safetensors file. */
export interface SafetensorsEntry {
  readonly name: string;
  readonly dtype: 'F32' | 'F64';
  readonly shape: readonly number[];
  readonly data: Float32Array | Float64Array;
}

/** A tensor for a safetensors file whose bytes are produced when they are written (one at a time). */
export interface SafetensorsSource {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  readonly bytes: number;
  /** The tensor's bytes, whole; or, for one too large to hold at once, its bytes in slices (in order). */
  readonly read: () => Promise<Uint8Array | AsyncIterable<Uint8Array> | Iterable<Uint8Array>>;
}

/**
 * Writes a safetensors file (8-byte little-endian header length, JSON header with dtype/shape/offsets,
 * then the tensors back to back), atomically: a temp file renamed into place. The format is small and
 * fixed; npm has no maintained writer for Node, so this is the whole implementation.
 */
export async function writeSafetensors(
  path: string,
  entries: readonly SafetensorsEntry[],
  metadata: Record<string, string> = {},
): Promise<void> {
  await writeSafetensorsFrom(
    path,
    entries.map((entry) => ({
      name: entry.name,
      dtype: entry.dtype,
      shape: entry.shape,
      bytes: entry.data.byteLength,
      read: () => Promise.resolve(new Uint8Array(entry.data.buffer, entry.data.byteOffset, entry.data.byteLength)),
    })),
    metadata,
  );
}

/** The same file, reading each tensor only when its turn comes: memory holds one tensor at a time. */
export async function writeSafetensorsFrom(
  path: string,
  entries: readonly SafetensorsSource[],
  metadata: Record<string, string> = {},
): Promise<void> {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const entry of entries) {
    header[entry.name] = { dtype: entry.dtype, shape: entry.shape, data_offsets: [offset, offset + entry.bytes] };
    offset += entry.bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(headerBytes.length));
  async function* parts(): AsyncGenerator<Uint8Array> {
    yield length;
    yield headerBytes;
    for (const entry of entries) {
      const bytes = await entry.read();
      let written = 0;
      for await (const slice of bytes instanceof Uint8Array ? [bytes] : bytes) {
        written += slice.byteLength;
        yield slice;
      }
      if (written !== entry.bytes)
        throw new GramfuseError(ErrorCode.Internal, `safetensors ${entry.name}: ${written} bytes, the header says ${entry.bytes}`);
    }
  }
  await writeFileAtomic(path, parts(), 'writing the safetensors file');
}

/** One tensor as read from a safetensors file: its bytes are a view into the file's buffer. */
export interface SafetensorsTensor {
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly bytes: Uint8Array;
}

const DTYPE_WIDTH: Readonly<Record<string, number>> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** A tensor's entry in a safetensors header; `begin`/`end` are offsets into the file (header included). */
export interface SafetensorsEntryInfo {
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly begin: number;
  readonly end: number;
}

/**
 * Checks a safetensors header (the JSON after the 8-byte length) against a file of `fileLength` bytes: JSON, dtypes,
 * shapes against byte ranges, ranges inside the data and not overlapping. `invalid` builds the error.
 */
export function parseSafetensorsHeader(
  headerBytes: Uint8Array,
  fileLength: number,
  invalid: (reason: string) => Error,
): { entries: Map<string, SafetensorsEntryInfo>; metadata: Record<string, string> } {
  const headerEnd = 8 + headerBytes.byteLength;
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (error) {
    throw invalid(`header is not valid JSON (${(error as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw invalid('header is not a JSON object');
  const dataLength = fileLength - headerEnd;
  const entries = new Map<string, SafetensorsEntryInfo>();
  const ranges: [number, number, string][] = [];
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = entry as Record<string, string>;
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const width = typeof e.dtype === 'string' ? DTYPE_WIDTH[e.dtype] : undefined;
    if (width === undefined) throw invalid(`tensor ${name}: unknown dtype ${JSON.stringify(e.dtype)}`);
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && (d as number) >= 0))
      throw invalid(`tensor ${name}: bad shape`);
    if (
      !Array.isArray(e.data_offsets) ||
      e.data_offsets.length !== 2 ||
      !e.data_offsets.every((d) => Number.isInteger(d) && (d as number) >= 0)
    ) {
      throw invalid(`tensor ${name}: bad data_offsets`);
    }
    const [begin, end] = e.data_offsets as [number, number];
    const shape = e.shape as number[];
    if (begin > end || end > dataLength) throw invalid(`tensor ${name}: bytes ${begin}..${end} outside the ${dataLength} data bytes`);
    if (end - begin !== shape.reduce((a, b) => a * b, 1) * width)
      throw invalid(`tensor ${name}: ${end - begin} bytes for shape [${shape.join(', ')}] of ${e.dtype as string}`);
    ranges.push([begin, end, name]);
    entries.set(name, { dtype: e.dtype as string, shape, begin: headerEnd + begin, end: headerEnd + end });
  }
  ranges.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < ranges.length; i++)
    if (ranges[i]![0] < ranges[i - 1]![1]) throw invalid(`tensors ${ranges[i - 1]![2]} and ${ranges[i]![2]} overlap`);
  return { entries, metadata };
}

/** The header of a safetensors file on disk, read without reading its tensors (any size of file). */
export async function readSafetensorsHeader(
  path: string,
  invalid: (reason: string) => Error,
): Promise<{ entries: Map<string, SafetensorsEntryInfo>; metadata: Record<string, string> }> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    throw fileError(error, path, 'reading a safetensors file');
  }
  try {
    const { size } = await handle.stat();
    if (size < 8) throw invalid('shorter than the 8-byte header length');
    const length = Buffer.alloc(8);
    await handle.read(length, 0, 8, 0);
    const headerLength = length.readBigUInt64LE(0);
    if (headerLength > BigInt(size - 8) || headerLength > 100_000_000n) throw invalid(`header length ${headerLength} exceeds the file`);
    const header = Buffer.alloc(Number(headerLength));
    const { bytesRead } = await handle.read(header, 0, header.byteLength, 8);
    if (bytesRead !== header.byteLength) throw invalid('header shorter than its length says');
    return parseSafetensorsHeader(header, size, invalid);
  } finally {
    await handle.close();
  }
}

/**
 * Parses a safetensors file held in memory, with every check of `parseSafetensorsHeader`.
 * `invalid` builds the error (callers choose the code and name the file).
 */
export function parseSafetensors(
  file: Uint8Array,
  invalid: (reason: string) => Error,
): { tensors: Map<string, SafetensorsTensor>; metadata: Record<string, string> } {
  if (file.byteLength < 8) throw invalid('shorter than the 8-byte header length');
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const headerLength = view.getBigUint64(0, true);
  if (headerLength > BigInt(file.byteLength - 8) || headerLength > 100_000_000n)
    throw invalid(`header length ${headerLength} exceeds the file`);
  const { entries, metadata } = parseSafetensorsHeader(file.subarray(8, 8 + Number(headerLength)), file.byteLength, invalid);
  const tensors = new Map<string, SafetensorsTensor>();
  for (const [name, e] of entries) tensors.set(name, { dtype: e.dtype, shape: e.shape, bytes: file.subarray(e.begin, e.end) });
  return { tensors, metadata };
}
