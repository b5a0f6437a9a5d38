import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';

import { fileError } from '../errors.js';

/** One tensor for a safetensors file. */
export interface SafetensorsEntry {
  readonly name: string;
  readonly dtype: 'F32' | 'F64';
  readonly shape: readonly number[];
  readonly data: Float32Array | Float64Array;
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
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const entry of entries) {
    const bytes = entry.data.byteLength;
    header[entry.name] = { dtype: entry.dtype, shape: entry.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(headerBytes.length));
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const handle = await open(tmp, 'w');
    try {
      await handle.write(length);
      await handle.write(headerBytes);
      for (const entry of entries) await handle.write(new Uint8Array(entry.data.buffer, entry.data.byteOffset, entry.data.byteLength));
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (error) {
    await rm(tmp, { force: true });
    throw fileError(error, path, 'writing the safetensors file');
  }
}
