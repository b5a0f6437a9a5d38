// The masks' pseudo-random generator: AES-256-CTR from node:crypto (OpenSSL: audited, AES-NI on these machines,
// several GB/s; @noble/ciphers' ChaCha20 is as sound but pure JavaScript, an order of magnitude slower on the hot
// path of hundreds of millions of entries). The key is HKDF-SHA256 of the seed and a label naming the use
// (job, statistic, pair or self mask), so no key-and-counter pair is ever used twice and the IV can stay zero.
import { createCipheriv, hkdfSync } from 'node:crypto';

/** Entries per keystream slice: bounded memory whatever the vector's size (16 MiB of mask at a time). */
const SLICE = 1 << 21;
const ZEROS = new Uint8Array(8 * SLICE);

function maskKey(seed: Uint8Array, label: string): Buffer {
  if (seed.byteLength !== 32) throw new RangeError(`a mask seed is 32 bytes, not ${seed.byteLength}`);
  return Buffer.from(hkdfSync('sha256', seed, Buffer.alloc(0), `gramfuse secagg mask\u0000${label}`, 32));
}

/**
 * target ← target + sign · PRG(seed, label)[offset … offset + target.length) (mod 2⁶⁴), the mask generated slice by
 * slice. The same seed and label always give the same mask, so the party that adds it and the one that subtracts it
 * cancel exactly; `offset` (in entries) lets a long vector be masked a slice at a time (AES-CTR seeks to the block).
 */
export function applyMask(target: BigUint64Array, seed: Uint8Array, label: string, sign: 1 | -1, offset = 0): void {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`a mask offset is a whole number of entries, not ${offset}`);
  // The counter block holding entry `offset` (two 64-bit entries per 16-byte AES block), big-endian as OpenSSL counts.
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64BE(BigInt(Math.floor(offset / 2)), 8);
  const cipher = createCipheriv('aes-256-ctr', maskKey(seed, label), iv);
  if (offset % 2 === 1) cipher.update(ZEROS.subarray(0, 8)); // the block's first entry precedes the slice
  for (let start = 0; start < target.length; start += SLICE) {
    const n = Math.min(SLICE, target.length - start);
    let stream = cipher.update(ZEROS.subarray(0, 8 * n));
    if (stream.byteOffset % 8 !== 0) stream = Buffer.from(stream); // a 64-bit view needs 8-byte alignment
    const mask = new BigUint64Array(stream.buffer, stream.byteOffset, n);
    if (sign === 1) for (let i = 0; i < n; i++) target[start + i] = BigInt.asUintN(64, target[start + i]! + mask[i]!);
    else for (let i = 0; i < n; i++) target[start + i] = BigInt.asUintN(64, target[start + i]! - mask[i]!);
  }
}
