// float16 and bfloat16 parameter values (shared/dtypes.ts): decoded to float64 and encoded back, rounded to
// nearest even. Checked against independent decodings — the IEEE binary16 formula, and bfloat16 as the top half
// of a float32 — over every one of the 65536 bit patterns and every midpoint between neighbours.
import { describe, expect, it } from 'vitest';

import { decodeFloats, encodeFloats } from '../../../shared/index.js';
import { encodeFinite } from '../../../shared/onnx/index.js';
import { halfValue } from '../../helpers/regmean-reference.js';

const bfloatValue = (bits: number): number => new Float32Array(new Uint32Array([bits << 16]).buffer)[0]!;
const decoders = { float16: halfValue, bfloat16: bfloatValue } as const;
const allBits = Uint16Array.from({ length: 65536 }, (_, i) => i);
const bytesOf = (bits: Uint16Array): Uint8Array => new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength);
const bitsOf = (bytes: Uint8Array): Uint16Array => new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);

describe.each(['float16', 'bfloat16'] as const)('%s', (dtype) => {
  const decode = decoders[dtype];
  const exponentMask = dtype === 'float16' ? 0x7c00 : 0x7f80;
  const isNaNBits = (b: number): boolean => (b & exponentMask) === exponentMask && (b & ~exponentMask & 0x7fff) !== 0;

  it('decodes every bit pattern as the independent formula does', () => {
    const values = decodeFloats(bytesOf(allBits), dtype);
    for (let b = 0; b < 65536; b++) {
      if (isNaNBits(b)) expect(Number.isNaN(values[b]!)).toBe(true);
      else expect(Object.is(values[b], decode(b)), `bits 0x${b.toString(16)}`).toBe(true);
    }
  });

  it('encodes every value back to its own bits (±0 kept, NaN stays NaN)', () => {
    const values = Float64Array.from(allBits, decode);
    const bits = bitsOf(encodeFloats(values, dtype));
    for (let b = 0; b < 65536; b++) {
      if (isNaNBits(b)) expect(isNaNBits(bits[b]!)).toBe(true);
      else expect(bits[b], `bits 0x${b.toString(16)}`).toBe(b);
    }
  });

  it('rounds to nearest, ties to even, and past the largest finite value to infinity', () => {
    // Positive finite neighbours b, b+1 (b+1 may be +Infinity): the midpoint goes to the even one, just above it up.
    const lows: number[] = [];
    const mids: number[] = [];
    for (let b = 0; b < exponentMask; b++) {
      lows.push(b);
      const hi = decode(b + 1);
      const lo = decode(b);
      // The midpoint toward infinity is where the format's next step would be: lo + (lo − its lower neighbour) / 2.
      mids.push(Number.isFinite(hi) ? (lo + hi) / 2 : lo + (lo - decode(b - 1)) / 2);
    }
    const atMid = bitsOf(encodeFloats(Float64Array.from(mids), dtype));
    const above = bitsOf(
      encodeFloats(
        Float64Array.from(mids, (m) => m * (1 + 2 ** -40)),
        dtype,
      ),
    );
    const below = bitsOf(
      encodeFloats(
        Float64Array.from(mids, (m) => m * (1 - 2 ** -40)),
        dtype,
      ),
    );
    for (const [i, b] of lows.entries()) {
      expect(atMid[i], `midpoint above 0x${b.toString(16)}`).toBe(b % 2 === 0 ? b : b + 1);
      expect(above[i]).toBe(b + 1);
      expect(below[i]).toBe(b);
    }
    // Negative values mirror the positive ones.
    expect(
      bitsOf(
        encodeFloats(
          Float64Array.from(mids, (m) => -m),
          dtype,
        ),
      ),
    ).toEqual(atMid.map((b) => b | 0x8000));
  });

  it('a merged value the dtype cannot hold is refused, naming the parameter and index', () => {
    const big = dtype === 'float16' ? 70_000 : 4e38;
    expect(() => encodeFinite('w', Float64Array.from([1, big]), dtype)).toThrow(
      expect.objectContaining({ code: 'NON_FINITE', message: expect.stringMatching(/w: merged value .* at index 1 does not fit/) }),
    );
    expect(() => encodeFinite('w', Float64Array.from([Number.NaN]), dtype, 7)).toThrow(/index 7 is not finite/);
  });
});

describe('known float16 values', () => {
  it('matches the IEEE 754 examples', () => {
    const bits = bitsOf(encodeFloats(Float64Array.from([1, -2, 65504, 2 ** -24, 2 ** -14, 0.1, 1 / 3, 0]), 'float16'));
    expect([...bits]).toEqual([0x3c00, 0xc000, 0x7bff, 0x0001, 0x0400, 0x2e66, 0x3555, 0x0000]);
  });
});
