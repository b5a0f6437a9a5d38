// Fixed point in Z/2⁶⁴: each owner encodes value x as round(x · 2^f) in two's complement. With every owner's values
// within ±2^b (the bound each owner declares first, a power of two) and n owners, the sum stays within
// ±n·2^(b+f) < 2⁶³ when f = 62 − b − ⌈log₂ n⌉: it decodes exactly, with an absolute error of at most n·2^−(f+1)
// per entry (each owner's rounding). The scale and that resolution are in the plan the owner approves.
import { ErrorCode, GramfuseError } from '../errors.js';
import { ringVector } from './ring.js';

const TWO32 = 2 ** 32;

export interface FixedPointScale {
  /** Each owner's |value| ≤ 2^boundLog2. */
  readonly boundLog2: number;
  readonly owners: number;
  /** Fractional bits f: a value is round(x · 2^f). */
  readonly fractionBits: number;
  /** Worst-case absolute error of a decoded sum, per entry: owners · 2^−(f+1). */
  readonly resolution: number;
}

/** The smallest b with max |x| ≤ 2^b (what an owner reports before the scale is chosen); −1074 for all zeros. */
export function boundLog2Of(values: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < values.length; i++) {
    const v = Math.abs(values[i]!);
    if (!Number.isFinite(v))
      throw new GramfuseError(ErrorCode.NonFinite, `value ${i} is ${values[i]}: a statistic must be finite to be aggregated`);
    if (v > max) max = v;
  }
  return max === 0 ? -1074 : Math.ceil(Math.log2(max));
}

/** The scale for n owners whose values are bounded by 2^(largest of their declared bounds). */
export function fixedPointScale(boundLog2: number, owners: number): FixedPointScale {
  if (!Number.isInteger(boundLog2) || !Number.isInteger(owners) || owners < 1)
    throw new GramfuseError(ErrorCode.InvalidArgument, `a fixed-point scale needs an integer bound exponent and owners ≥ 1`);
  const fractionBits = 62 - boundLog2 - Math.ceil(Math.log2(owners));
  if (fractionBits < 0)
    throw new GramfuseError(
      ErrorCode.SecureAggregation,
      `values up to 2^${boundLog2} from ${owners} owners do not fit Z/2⁶⁴ (the sum could overflow): secure aggregation needs |x| ≤ 2^${62 - Math.ceil(Math.log2(owners))}`,
      { facts: { boundLog2, owners } },
    );
  return { boundLog2, owners, fractionBits, resolution: owners * 2 ** -(fractionBits + 1) };
}

/**
 * Encodes one owner's values; a value past the declared bound is SECURE_AGGREGATION (nothing is encoded: the
 * caller sends nothing), naming the statistic, the entry and the bound.
 */
export function encodeFixedPoint(values: ArrayLike<number>, scale: FixedPointScale, statistic: string): BigUint64Array {
  const vector = ringVector(values.length);
  // Written as 32-bit lanes (little-endian words): no BigInt per value, ≈ 2.5× faster (bench secure-primitives).
  const out = new Uint32Array(vector.buffer, vector.byteOffset, 2 * values.length);
  const bound = 2 ** scale.boundLog2;
  const factor = 2 ** scale.fractionBits;
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    if (!(Math.abs(x) <= bound))
      throw new GramfuseError(
        ErrorCode.SecureAggregation,
        `${statistic}: entry ${i} is ${x}, past the declared bound ±2^${scale.boundLog2}; nothing was sent (declare a larger bound)`,
        { facts: { statistic, entry: i, boundLog2: scale.boundLog2 } },
      );
    // x · 2^f is exact (a power of two); rounded to an integer of magnitude < 2⁶³, split into two lanes exactly.
    const v = Math.round(x * factor);
    const hi = Math.floor(v / TWO32);
    out[2 * i] = v - hi * TWO32;
    out[2 * i + 1] = hi >>> 0;
  }
  return vector;
}

/** Decodes a sum of encodings (two's complement back to a signed value, then · 2^−f). */
export function decodeFixedPoint(vector: BigUint64Array, scale: FixedPointScale): Float64Array {
  const sum = new Uint32Array(vector.buffer, vector.byteOffset, 2 * vector.length);
  const out = new Float64Array(vector.length);
  const factor = 2 ** -scale.fractionBits;
  for (let i = 0; i < out.length; i++) out[i] = ((sum[2 * i + 1]! | 0) * TWO32 + sum[2 * i]!) * factor;
  return out;
}
