// Shamir's t-of-n secret sharing, byte by byte over GF(2⁸) (the AES field, x⁸ + x⁴ + x³ + x + 1): any t shares give
// the secret back, fewer give no information about it. Shares are numbered x = 1..n (x = 0 is the secret).
import { randomBytes } from 'node:crypto';

import { ErrorCode, GramfuseError } from '../errors.js';

const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
{
  let v = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = v;
    LOG[v] = i;
    v ^= v << 1; // multiply by the generator 3
    if (v & 0x100) v ^= 0x11b;
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255]!;
}
const mul = (a: number, b: number): number => (a === 0 || b === 0 ? 0 : EXP[LOG[a]! + LOG[b]!]!);
const div = (a: number, b: number): number => (a === 0 ? 0 : EXP[LOG[a]! + 255 - LOG[b]!]!);

export interface Share {
  readonly x: number;
  readonly y: Uint8Array;
}

export function splitSecret(secret: Uint8Array, shares: number, threshold: number): Share[] {
  if (!Number.isInteger(threshold) || !Number.isInteger(shares) || threshold < 1 || shares < threshold || shares > 255)
    throw new GramfuseError(ErrorCode.InvalidArgument, `Shamir sharing needs 1 ≤ threshold ≤ shares ≤ 255 (got ${threshold} of ${shares})`);
  const coefficients = randomBytes(secret.byteLength * (threshold - 1));
  const out: Share[] = [];
  for (let x = 1; x <= shares; x++) {
    const y = new Uint8Array(secret.byteLength);
    for (let b = 0; b < secret.byteLength; b++) {
      // Horner: a_{t−1}x^{t−1} + … + a_1x + secret
      let acc = 0;
      for (let k = threshold - 2; k >= 0; k--) acc = mul(acc, x) ^ coefficients[b * (threshold - 1) + k]!;
      y[b] = mul(acc, x) ^ secret[b]!;
    }
    out.push({ x, y });
  }
  return out;
}

/** The secret from at least `threshold` distinct shares (Lagrange interpolation at 0). */
export function combineShares(shares: readonly Share[], threshold: number): Uint8Array {
  const distinct = [...new Map(shares.map((s) => [s.x, s])).values()];
  if (distinct.length < threshold)
    throw new GramfuseError(
      ErrorCode.SecureAggregation,
      `${distinct.length} distinct share(s) cannot reconstruct a secret shared ${threshold}-of-n: too many owners dropped out`,
      { facts: { shares: distinct.length, threshold } },
    );
  const used = distinct.slice(0, threshold);
  const length = used[0]!.y.byteLength;
  const out = new Uint8Array(length);
  for (const [i, si] of used.entries()) {
    // λ_i = Π_{j≠i} x_j / (x_j − x_i); in GF(2⁸) subtraction is xor.
    let lambda = 1;
    for (const [j, sj] of used.entries()) if (j !== i) lambda = mul(lambda, div(sj.x, sj.x ^ si.x));
    for (let b = 0; b < length; b++) out[b] = out[b]! ^ mul(lambda, si.y[b]!);
  }
  return out;
}

/**
 * The secret from `shares` that `check` accepts (a commitment, an advertised public key), cross-checked: the first t
 * distinct shares are tried, then other t-subsets until one passes (at most `maxTries`), and every share outside the
 * subset that passed is checked against it (any t − 1 of the good shares with it must give the same secret). Returns
 * the secret and the x of each share that is inconsistent with it (a wrong share: a lying owner or relay); undefined
 * when no subset gives a secret `check` accepts.
 */
export function reconstructChecked(
  shares: readonly Share[],
  threshold: number,
  check: (secret: Uint8Array) => boolean,
  maxTries = 2000,
): { readonly secret: Uint8Array; readonly inconsistent: number[] } | undefined {
  const distinct = [...new Map(shares.map((s) => [s.x, s])).values()];
  if (distinct.length < threshold) combineShares(distinct, threshold); // throws, naming the shortfall
  let tries = 0;
  const pick: number[] = [];
  const search = (from: number): Share[] | undefined => {
    if (pick.length === threshold) {
      tries++;
      const subset = pick.map((i) => distinct[i]!);
      return check(combineShares(subset, threshold)) ? subset : undefined;
    }
    for (let i = from; i <= distinct.length - (threshold - pick.length) && tries < maxTries; i++) {
      pick.push(i);
      const found = search(i + 1);
      pick.pop();
      if (found !== undefined) return found;
    }
    return undefined;
  };
  const good = search(0);
  if (good === undefined) return undefined;
  const secret = combineShares(good, threshold);
  const base = good.slice(0, threshold - 1);
  const inconsistent = distinct
    .filter((s) => !good.includes(s))
    .filter((s) => !Buffer.from(combineShares([...base, s], threshold)).equals(Buffer.from(secret)))
    .map((s) => s.x);
  return { secret, inconsistent };
}
