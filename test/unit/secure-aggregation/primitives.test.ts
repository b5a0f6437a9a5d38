import { randomBytes } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { ErrorCode, type GramfuseError } from '../../../shared/index.js';
import { createCertificateAuthority, issueCertificate } from '../../../shared/security/index.js';
import {
  agreedSecret,
  applyMask,
  boundLog2Of,
  combineShares,
  decodeFixedPoint,
  encodeFixedPoint,
  fixedPointScale,
  generateAgreementKeys,
  openShare,
  ringAddInto,
  ringAddIntoLanes,
  ringSubInto,
  ringVector,
  sealShare,
  ShareGuard,
  signAdvertisement,
  splitSecret,
  verifyAdvertisement,
} from '../../../shared/secure-aggregation/index.js';
import { rng } from '../../helpers/random.js';

// Reference: unbounded BigInt arithmetic reduced mod 2⁶⁴ by hand (the code under test wraps with asUintN or lanes).
const big = (v: BigUint64Array): bigint[] => Array.from(v);
const M = 1n << 64n;

function randomRing(n: number): BigUint64Array {
  return new BigUint64Array(randomBytes(8 * n).buffer.slice(0));
}

const coded = (fn: () => unknown): GramfuseError => {
  try {
    fn();
  } catch (error) {
    return error as GramfuseError;
  }
  throw new Error('expected a coded error');
};

describe('Z/2⁶⁴ vectors', () => {
  it('add and subtract exactly as unbounded integers mod 2⁶⁴ do, wrap-around included; the lane form agrees', () => {
    const a = randomRing(4096);
    const b = randomRing(4096);
    // Edge entries: all ones plus one, zero minus one.
    a.set([M - 1n, 0n], 0);
    b.set([1n, 1n], 0);
    const [ra, rb] = [big(a), big(b)];
    const sum = a.slice();
    ringAddInto(sum, b);
    expect(big(sum)).toEqual(ra.map((x, i) => (x + rb[i]!) % M));
    const diff = a.slice();
    ringSubInto(diff, b);
    expect(big(diff)).toEqual(ra.map((x, i) => (((x - rb[i]!) % M) + M) % M));
    const lanes = a.slice();
    ringAddIntoLanes(new Uint32Array(lanes.buffer), new Uint32Array(b.buffer));
    expect(big(lanes)).toEqual(big(sum));
  });
});

describe('fixed point in Z/2⁶⁴', () => {
  it('a sum over 5 owners decodes to the float64 sum within the stated resolution', () => {
    const rand = rng(7);
    const owners = Array.from({ length: 5 }, () => Float64Array.from({ length: 2000 }, () => (rand() - 0.5) * 600));
    const scale = fixedPointScale(Math.max(...owners.map(boundLog2Of)), owners.length);
    expect(scale.boundLog2).toBe(9);
    const sum = ringVector(2000);
    for (const [i, o] of owners.entries()) ringAddInto(sum, encodeFixedPoint(o, scale, `gram/g${i}`));
    const decoded = decodeFixedPoint(sum, scale);
    let worst = 0;
    for (let k = 0; k < 2000; k++) {
      const exact = owners.reduce((s, o) => s + o[k]!, 0);
      // The decode's own float64 rounding (relative 2⁻⁵³) on top of each owner's rounding to 2^−f.
      worst = Math.max(worst, Math.abs(decoded[k]! - exact) - 2 ** -52 * Math.abs(exact));
    }
    expect(worst).toBeLessThanOrEqual(scale.resolution);
    expect(scale.resolution).toBeLessThan(1e-12);
  });

  it('cannot overflow: every owner at +bound, or at −bound, still decodes', () => {
    const scale = fixedPointScale(20, 7);
    for (const sign of [1, -1]) {
      const sum = ringVector(1);
      for (let i = 0; i < 7; i++) ringAddInto(sum, encodeFixedPoint([sign * 2 ** 20], scale, 'x'));
      expect(decodeFixedPoint(sum, scale)[0]).toBe(sign * 7 * 2 ** 20);
    }
  });

  it('a value past the declared bound is SECURE_AGGREGATION at the owner, naming the statistic and entry', () => {
    const scale = fixedPointScale(3, 5);
    const error = coded(() => encodeFixedPoint([1, 2, 8.5], scale, 'gram/g1'));
    expect(error.code).toBe(ErrorCode.SecureAggregation);
    expect(error.message).toMatch(/gram\/g1: entry 2 is 8.5, past the declared bound ±2\^3; nothing was sent/);
    expect(coded(() => encodeFixedPoint([Number.NaN], scale, 'g')).code).toBe(ErrorCode.SecureAggregation);
    expect(coded(() => fixedPointScale(62, 4)).code).toBe(ErrorCode.SecureAggregation);
  });
});

describe('masks', () => {
  it('pairwise masks cancel in the sum and self masks come off with their seeds: the sum is exact', () => {
    const n = 3;
    const keys = Array.from({ length: n }, () => generateAgreementKeys());
    const selfSeeds = Array.from({ length: n }, () => new Uint8Array(randomBytes(32)));
    const plain = Array.from({ length: n }, () => randomRing(5000));
    const total = ringVector(5000);
    for (let i = 0; i < n; i++) {
      const y = plain[i]!.slice();
      applyMask(y, selfSeeds[i]!, 'job/gram/g0/self', 1);
      for (let j = 0; j < n; j++) {
        if (j === i) continue;
        const seed = agreedSecret(keys[i]!.privateKeyPem, keys[j]!.publicKeyPem, 'job', 'mask');
        const pair = `job/gram/g0/pair/${Math.min(i, j)}-${Math.max(i, j)}`;
        applyMask(y, seed, pair, j < i ? 1 : -1);
      }
      // A masked vector says nothing by itself: far from its plaintext.
      const p = big(plain[i]!);
      expect(big(y).filter((v, k) => v === p[k]).length).toBeLessThan(5);
      ringAddInto(total, y);
    }
    for (let i = 0; i < n; i++) applyMask(total, selfSeeds[i]!, 'job/gram/g0/self', -1);
    const expected = ringVector(5000);
    for (const p of plain) ringAddInto(expected, p);
    expect(big(total)).toEqual(big(expected));
  });

  it('are deterministic per seed and label, and differ across labels', () => {
    const seed = new Uint8Array(32).fill(9);
    const a = ringVector(64);
    const b = ringVector(64);
    const c = ringVector(64);
    applyMask(a, seed, 'x', 1);
    applyMask(b, seed, 'x', 1);
    applyMask(c, seed, 'y', 1);
    expect(big(a)).toEqual(big(b));
    expect(big(a)).not.toEqual(big(c));
  });
});

describe('keys and shares', () => {
  it('X25519 agreement gives both sides the same secret, bound to job and use', () => {
    const [a, b] = [generateAgreementKeys(), generateAgreementKeys()];
    const ab = agreedSecret(a.privateKeyPem, b.publicKeyPem, 'j', 'mask');
    expect(Buffer.from(ab)).toEqual(Buffer.from(agreedSecret(b.privateKeyPem, a.publicKeyPem, 'j', 'mask')));
    expect(Buffer.from(ab)).not.toEqual(Buffer.from(agreedSecret(a.privateKeyPem, b.publicKeyPem, 'j', 'share-encryption')));
    expect(Buffer.from(ab)).not.toEqual(Buffer.from(agreedSecret(a.privateKeyPem, b.publicKeyPem, 'k', 'mask')));
  });

  it('advertisements verify with the owner’s certificate only: another identity’s signature or a swapped key is refused', async () => {
    const ca = await createCertificateAuthority('test ca');
    const org0 = await issueCertificate(ca, 'org0');
    const org1 = await issueCertificate(ca, 'org1');
    const fields = {
      job: 'j',
      owner: 'org0',
      maskPublicKey: generateAgreementKeys().publicKeyPem,
      encryptionPublicKey: generateAgreementKeys().publicKeyPem,
      selfSeedCommitment: 'ab'.repeat(32),
      bounds: { g0: 3 },
    };
    const ad = signAdvertisement(fields, org0.keyPem);
    expect(() => verifyAdvertisement(ad, org0.certPem)).not.toThrow();
    // Signed by org1's key, claimed as org0's.
    const forged = signAdvertisement(fields, org1.keyPem);
    expect(coded(() => verifyAdvertisement(forged, org0.certPem)).message).toMatch(/signature does not verify with org0's certificate/);
    expect(coded(() => verifyAdvertisement(forged, org1.certPem)).message).toMatch(/signed for certificate org1, not org0's/);
    // The coordinator swapped in a key of its own.
    const swapped = { ...ad, maskPublicKey: generateAgreementKeys().publicKeyPem };
    expect(coded(() => verifyAdvertisement(swapped, org0.certPem)).code).toBe(ErrorCode.SecureAggregation);
    // The bounds are signed too (issue 37 review, finding 3): the coordinator cannot relay other ones.
    const rebound = { ...ad, bounds: { g0: 40 } };
    expect(coded(() => verifyAdvertisement(rebound, org0.certPem)).message).toMatch(/signature does not verify with org0's certificate/);
  });

  it('sealed shares open for their recipient only, and not once changed', () => {
    const secret = new Uint8Array(randomBytes(32));
    const sealed = sealShare(secret, new Uint8Array([1, 2, 3]), 'j org0→org1');
    expect([...openShare(secret, sealed, 'j org0→org1')]).toEqual([1, 2, 3]);
    expect(coded(() => openShare(new Uint8Array(randomBytes(32)), sealed, 'j org0→org1')).code).toBe(ErrorCode.SecureAggregation);
    expect(coded(() => openShare(secret, sealed, 'j org0→org2')).code).toBe(ErrorCode.SecureAggregation);
    const flipped = sealed.slice();
    flipped[30] = flipped[30]! ^ 1;
    expect(coded(() => openShare(secret, flipped, 'j org0→org1')).code).toBe(ErrorCode.SecureAggregation);
  });

  it('Shamir: any t of n shares give the secret back; t − 1 do not', () => {
    const secret = new Uint8Array(randomBytes(32));
    const shares = splitSecret(secret, 5, 3);
    for (const pick of [
      [0, 1, 2],
      [0, 2, 4],
      [4, 3, 1],
      [1, 2, 3, 4],
    ])
      expect(
        Buffer.from(
          combineShares(
            pick.map((i) => shares[i]!),
            3,
          ),
        ),
      ).toEqual(Buffer.from(secret));
    // Two shares interpolate a line: not the secret (probability 2⁻²⁵⁶ otherwise).
    expect(Buffer.from(combineShares(shares.slice(0, 2), 2))).not.toEqual(Buffer.from(secret));
    expect(coded(() => combineShares(shares.slice(0, 2), 3)).code).toBe(ErrorCode.SecureAggregation);
  });

  it('the guard reveals one kind of share per owner, never both, and keeps refusing after a restart', () => {
    const guard = new ShareGuard('j');
    guard.reveal('org1', 'self-mask');
    guard.reveal('org1', 'self-mask');
    guard.reveal('org2', 'mask-key');
    const error = coded(() => guard.reveal('org1', 'mask-key'));
    expect(error.code).toBe(ErrorCode.SecureAggregation);
    expect(error.message).toMatch(/refusing to reveal org1's mask-key share: its self-mask share was revealed already/);
    const restarted = new ShareGuard('j', guard.toJSON());
    expect(coded(() => restarted.reveal('org2', 'self-mask')).code).toBe(ErrorCode.SecureAggregation);
  });
});
