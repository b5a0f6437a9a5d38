// Writing Hugging Face checkpoint directories for tests, by the safetensors spec directly (8-byte little-endian header
// length, JSON header with dtype/shape/data_offsets, raw little-endian data), independent of gramfuse's own writer.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { encodeFloats } from '../../shared/index.js';

export type StoredDtype = 'F32' | 'F16' | 'BF16';

export interface TestTensor {
  readonly name: string;
  readonly shape: readonly number[];
  /** Values in float64; stored rounded to `dtype`. */
  readonly values: Float64Array;
}

/** Bytes of a safetensors file holding `tensors` in `dtype`; `header` overrides entries (for malformed files). */
export function safetensorsBytes(tensors: readonly TestTensor[], dtype: StoredDtype, header: Record<string, unknown> = {}): Buffer {
  const parts: Uint8Array[] = [];
  const entries: Record<string, unknown> = {};
  let offset = 0;
  for (const t of tensors) {
    const bytes = encodeFloats(t.values, dtype === 'F32' ? 'float32' : dtype === 'F16' ? 'float16' : 'bfloat16');
    entries[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    parts.push(bytes);
    offset += bytes.byteLength;
  }
  let json = JSON.stringify({ __metadata__: { format: 'pt' }, ...entries, ...header });
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([length, Buffer.from(json), ...parts]);
}

/** The values a tensor holds once stored in `dtype` and read back (what the model computes with). */
export function roundTo(values: Float64Array, dtype: StoredDtype): Float64Array {
  if (dtype === 'F32') return Float64Array.from(Float32Array.from(values));
  const bytes = encodeFloats(values, dtype === 'F16' ? 'float16' : 'bfloat16');
  const u16 = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  const out = new Float64Array(values.length);
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  for (let i = 0; i < values.length; i++) {
    if (dtype === 'BF16') {
      u32[0] = u16[i]! << 16;
      out[i] = f32[0]!;
    } else {
      const h = u16[i]!;
      const e = (h >> 10) & 0x1f;
      const m = h & 0x3ff;
      const s = h & 0x8000 ? -1 : 1;
      out[i] = e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
    }
  }
  return out;
}

/**
 * Writes a checkpoint directory: config.json, and the tensors in one model.safetensors or, with `shards` > 1, in
 * `model-0000i-of-0000n.safetensors` files listed by model.safetensors.index.json.
 */
export function writeHfDirectory(
  dir: string,
  config: Record<string, unknown>,
  tensors: readonly TestTensor[],
  options: { readonly dtype?: StoredDtype; readonly shards?: number } = {},
): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  const dtype = options.dtype ?? 'F32';
  const shards = options.shards ?? 1;
  if (shards === 1) {
    writeFileSync(join(dir, 'model.safetensors'), safetensorsBytes(tensors, dtype));
    return;
  }
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const mine = tensors.filter((_, i) => i % shards === s);
    for (const t of mine) weightMap[t.name] = file;
    writeFileSync(join(dir, file), safetensorsBytes(mine, dtype));
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
}
