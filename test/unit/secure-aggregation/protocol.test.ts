// The rounds' arithmetic in one process (no sockets): masking by 5 owners, dropouts before and after upload, unmasking
// from t shares, checked against the float64 sum of the survivors' plaintext; the agent's checks on an unmasking request.
import { randomBytes } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { ErrorCode, type GramfuseError } from '../../../shared/index.js';
import {
  agreedSecret,
  applyMask,
  checkConfirmations,
  checkRoundScale,
  checkUnmaskRequest,
  combineShares,
  generateAgreementKeys,
  maskSlice,
  pairSign,
  reconstructChecked,
  ringAddInto,
  seedCommitment,
  ShareGuard,
  signUnmaskRequest,
  splitSecret,
  statisticScale,
  unmaskSlice,
  verifyPeerCertificate,
} from '../../../shared/secure-aggregation/index.js';
import { certificateFingerprints, certificateRole, createCertificateAuthority, issueCertificate } from '../../../shared/security/index.js';
import { rng } from '../../helpers/random.js';

const coded = (fn: () => unknown): GramfuseError => {
  try {
    fn();
  } catch (error) {
    return error as GramfuseError;
  }
  throw new Error('expected an error');
};

describe('secure aggregation rounds (pure)', () => {
  it('a mask applied in slices at any offsets equals the mask applied whole', () => {
    const seed = randomBytes(32);
    const whole = new BigUint64Array(1001);
    applyMask(whole, seed, 'label', 1);
    for (const cut of [
      [0, 1001],
      [0, 1, 2, 1001],
      [0, 7, 8, 500, 999, 1001],
      [0, 3, 1001],
    ]) {
      const pieces = new BigUint64Array(1001);
      for (let k = 0; k + 1 < cut.length; k++) applyMask(pieces.subarray(cut[k], cut[k + 1]), seed, 'label', 1, cut[k]);
      expect(Array.from(pieces)).toEqual(Array.from(whole));
    }
  });

  it('5 owners, one dropped after sharing and one after uploading: the unmasked sum is the survivors’ float64 sum', () => {
    const job = 'job-x';
    const owners = ['ann', 'bob', 'cy', 'dee', 'eve'];
    const t = 3;
    const random = rng(7);
    const entries = 257;
    const values = new Map(owners.map((o) => [o, Float64Array.from({ length: entries }, () => (random() - 0.5) * 40)]));
    const keys = new Map(owners.map((o) => [o, generateAgreementKeys()]));
    const seeds = new Map(owners.map((o) => [o, new Uint8Array(randomBytes(32))]));
    // Round 1: every owner shares its mask key and self seed t-of-n; share x = index + 1 goes to owners[index].
    const keyShares = new Map(owners.map((o) => [o, splitSecret(Buffer.from(keys.get(o)!.privateKeyPem), owners.length, t)]));
    const seedShares = new Map(owners.map((o) => [o, splitSecret(seeds.get(o)!, owners.length, t)]));
    const bound = Math.max(...owners.map((o) => Math.ceil(Math.log2(Math.max(...values.get(o)!.map(Math.abs))))));
    const scale = statisticScale(bound, owners.length);
    const dropped = 'dee'; // shared, never uploaded
    const survivors = owners.filter((o) => o !== dropped); // eve uploaded, then went away: she reveals nothing
    const masked = survivors.map((self) => {
      const pairSeeds = new Map(
        owners
          .filter((o) => o !== self)
          .map((o) => [o, agreedSecret(keys.get(self)!.privateKeyPem, keys.get(o)!.publicKeyPem, job, 'mask')]),
      );
      return maskSlice(values.get(self)!, 0, scale, { job, statistic: 'gram/g0', self, selfSeed: seeds.get(self)!, pairSeeds });
    });
    const sum = new BigUint64Array(entries);
    for (const m of masked) ringAddInto(sum, m);
    // Unmasking from the responders ann, bob, cy (t of them): survivors' seeds, the dropped owner's mask key.
    const responders = [0, 1, 2];
    const selfSeeds = survivors.map((o) =>
      combineShares(
        responders.map((r) => seedShares.get(o)![r]!),
        t,
      ),
    );
    const deeKey = Buffer.from(
      combineShares(
        responders.map((r) => keyShares.get(dropped)![r]!),
        t,
      ),
    ).toString('utf8');
    expect(deeKey).toBe(keys.get(dropped)!.privateKeyPem);
    const droppedPairs = survivors.map((s) => ({
      seed: agreedSecret(deeKey, keys.get(s)!.publicKeyPem, job, 'mask'),
      sign: pairSign(s, dropped),
    }));
    const out = unmaskSlice(sum, 0, scale, { job, statistic: 'gram/g0', selfSeeds, droppedPairs });
    for (let i = 0; i < entries; i++) {
      const expected = survivors.reduce((acc, o) => acc + values.get(o)![i]!, 0);
      expect(Math.abs(out[i]! - expected)).toBeLessThanOrEqual(scale.resolution + 1e-12 * Math.abs(expected));
    }
    // Without the dropped owner's correction the result is noise, not the sum (the masks really are there).
    const unfixed = new BigUint64Array(entries);
    for (const m of masked) ringAddInto(unfixed, m);
    const noise = unmaskSlice(unfixed, 0, scale, { job, statistic: 'gram/g0', selfSeeds, droppedPairs: [] });
    // (decoded noise spans the whole ±2^(b + ⌈log₂ n⌉) range, so almost every entry is far off)
    expect(Array.from(noise).filter((v, i) => Math.abs(v - out[i]!) > 1).length).toBeGreaterThan(0.9 * entries);
  });

  it('a masked vector alone is uncorrelated with its plaintext', () => {
    const random = rng(3);
    const values = Float64Array.from({ length: 20_000 }, () => random() * 8);
    const scale = statisticScale(3, 5);
    const peer = generateAgreementKeys();
    const self = generateAgreementKeys();
    const masked = maskSlice(values, 0, scale, {
      job: 'j',
      statistic: 's',
      self: 'a',
      selfSeed: randomBytes(32),
      pairSeeds: new Map([['b', agreedSecret(self.privateKeyPem, peer.publicKeyPem, 'j', 'mask')]]),
    });
    const asSigned = Array.from(new BigInt64Array(masked.buffer), (v) => Number(v));
    const mean = (a: ArrayLike<number>): number => Array.from(a).reduce((s, v) => s + v, 0) / a.length;
    const mx = mean(values);
    const my = mean(asSigned);
    let sxy = 0;
    let sxx = 0;
    let syy = 0;
    for (let i = 0; i < values.length; i++) {
      sxy += (values[i]! - mx) * (asSigned[i]! - my);
      sxx += (values[i]! - mx) ** 2;
      syy += (asSigned[i]! - my) ** 2;
    }
    expect(Math.abs(sxy / Math.sqrt(sxx * syy))).toBeLessThan(0.05);
  });

  it('a value past the declared bound is SECURE_AGGREGATION before anything is masked', () => {
    const error = coded(() =>
      maskSlice([1, 2, 9], 0, statisticScale(3, 3), {
        job: 'j',
        statistic: 'gram/g1',
        self: 'a',
        selfSeed: randomBytes(32),
        pairSeeds: new Map(),
      }),
    );
    expect(error.code).toBe(ErrorCode.SecureAggregation);
    expect(error.message).toMatch(/gram\/g1: entry 2 is 9, past the declared bound ±2\^3; nothing was sent/);
  });

  it('an agent refuses an unmasking request that asks both shares of one owner, names strangers, or has too few survivors', () => {
    const sharers = ['a', 'b', 'c', 'd'];
    const terms = { threshold: 3, minOwners: 3, participants: sharers };
    const ctx = { sharers, self: 'a', terms };
    const both = coded(() => checkUnmaskRequest('j', { survivors: ['a', 'b', 'c'], dropped: ['c'] }, ctx, new ShareGuard('j')));
    expect(both.code).toBe(ErrorCode.SecureAggregation);
    expect(both.message).toMatch(/both the self-mask and the mask-key shares of c/);
    expect(coded(() => checkUnmaskRequest('j', { survivors: ['a', 'b', 'z'], dropped: [] }, ctx, new ShareGuard('j'))).message).toMatch(
      /z did not share keys/,
    );
    expect(coded(() => checkUnmaskRequest('j', { survivors: ['a', 'b'], dropped: ['c', 'd'] }, ctx, new ShareGuard('j'))).message).toMatch(
      /only 2 survivors, fewer than the 3 this owner approved \(threshold 3, minOwners 3\)/,
    );
    // Across requests: c's self-mask share went out once; a later request for its mask key is refused, and the refusal
    // records nothing (the guard is unchanged).
    const guard = new ShareGuard('j');
    checkUnmaskRequest('j', { survivors: ['a', 'b', 'c'], dropped: ['d'] }, ctx, guard);
    const before = guard.toJSON();
    const later = coded(() => checkUnmaskRequest('j', { survivors: ['a', 'b', 'd'], dropped: ['c'] }, ctx, guard));
    expect(later.code).toBe(ErrorCode.SecureAggregation);
    expect(guard.toJSON()).toEqual(before);
  });

  it('issue 37: the approved t and minOwners, not the round’s, decide; a dropped owner that uploaded refuses; survivors + dropped = sharers', () => {
    const sharers = ['a', 'b', 'c'];
    const terms = { threshold: 2, minOwners: 3, participants: sharers };
    // The late-threshold attack: t = 1 from the coordinator, survivors = [victim], everyone else dropped.
    const late = { survivors: ['a'], dropped: ['b', 'c'] };
    expect(coded(() => checkUnmaskRequest('j', late, { sharers, self: 'a', terms }, new ShareGuard('j'))).message).toMatch(
      /only 1 survivors, fewer than the 3 this owner approved/,
    );
    expect(coded(() => checkUnmaskRequest('j', late, { sharers, self: 'b', terms }, new ShareGuard('j'))).message).toMatch(
      /names b dropped, but b uploaded its masked statistics/,
    );
    // An owner left out of both lists: the request is not over the sharers this owner masked with.
    const terms2 = { threshold: 2, minOwners: 2, participants: sharers };
    expect(
      coded(() =>
        checkUnmaskRequest('j', { survivors: ['a', 'b'], dropped: [] }, { sharers, self: 'a', terms: terms2 }, new ShareGuard('j')),
      ).message,
    ).toMatch(/not exactly the 3 owners this one masked with \(c\)/);
    expect(() =>
      checkUnmaskRequest('j', { survivors: ['a', 'b'], dropped: ['c'] }, { sharers, self: 'a', terms: terms2 }, new ShareGuard('j')),
    ).not.toThrow();
  });

  it('issue 37: round scale — |U₁| must match, the owner’s bounds covered, at least minFractionBits kept', () => {
    expect(coded(() => checkRoundScale('j', { owners: 2, bounds: { s: 3 } }, 3, { s: 3 }, 20)).message).toMatch(
      /it is for 2 owners, but the key round has 3/,
    );
    expect(coded(() => checkRoundScale('j', { owners: 3, bounds: { s: 2 } }, 3, { s: 3 }, 20)).message).toMatch(
      /statistic s's bound 2\^2 is below this owner's 2\^3/,
    );
    // One owner declares 2^45: 62 − 45 − 2 = 15 fraction bits, fewer than 20.
    expect(coded(() => checkRoundScale('j', { owners: 3, bounds: { s: 45 } }, 3, { s: 3 }, 20)).message).toMatch(
      /statistic s would keep 15 fraction bits .* fewer than this owner's minFractionBits 20/,
    );
    expect(checkRoundScale('j', { owners: 3, bounds: { s: 3 } }, 3, { s: 3 }, 20).get('s')!.fractionBits).toBe(57);
  });

  it('issue 37: peers must be approved participants with owner certificates, never the coordinator’s server certificate, and match pins', async () => {
    const ca = await createCertificateAuthority('peer CA');
    const server = await issueCertificate(ca, 'coordinator', { hosts: ['localhost'] });
    const org0 = await issueCertificate(ca, 'org0');
    const creator = await issueCertificate(ca, 'org1', { role: 'creator' });
    const legacyOwner = await issueCertificate(ca, 'org2', { role: 'owner', hosts: ['org2.example'] });
    expect(certificateRole(org0.certPem)).toBe('owner');
    expect(certificateRole(server.certPem)).toBe('server');
    const rules = { participants: ['org0', 'org1', 'org2', 'coordinator'], serverCertificatePem: server.certPem, pins: {} };
    expect(() => verifyPeerCertificate(org0.certPem, ca.certPem, 'org0', rules)).not.toThrow();
    expect(coded(() => verifyPeerCertificate(server.certPem, ca.certPem, 'coordinator', rules)).message).toMatch(
      /is the coordinator’s own TLS server certificate/,
    );
    // Another server certificate (not the one this agent connected to) is still not an owner certificate.
    const other = await issueCertificate(ca, 'coordinator', { hosts: ['elsewhere'] });
    expect(coded(() => verifyPeerCertificate(other.certPem, ca.certPem, 'coordinator', rules)).message).toMatch(
      /it is a server certificate; only owner certificates are accepted as peers/,
    );
    expect(coded(() => verifyPeerCertificate(creator.certPem, ca.certPem, 'org1', rules)).message).toMatch(/it is a creator certificate/);
    expect(coded(() => verifyPeerCertificate(legacyOwner.certPem, ca.certPem, 'org2', rules)).message).toMatch(
      /allows TLS server authentication/,
    );
    expect(
      coded(() => verifyPeerCertificate(org0.certPem, ca.certPem, 'org0', { ...rules, participants: ['org1', 'org2', 'coordinator'] }))
        .message,
    ).toMatch(/org0 is not one of the participants this owner approved \(org1, org2, coordinator\)/);
    // Pins: the certificate's or the public key's fingerprint; an impostor issued by the same CA under org0's name fails.
    const pinned = certificateFingerprints(org0.certPem);
    expect(() => verifyPeerCertificate(org0.certPem, ca.certPem, 'org0', { ...rules, pins: { org0: pinned.publicKey } })).not.toThrow();
    expect(() => verifyPeerCertificate(org0.certPem, ca.certPem, 'org0', { ...rules, pins: { org0: pinned.certificate } })).not.toThrow();
    const impostor = await issueCertificate(ca, 'org0');
    expect(
      coded(() => verifyPeerCertificate(impostor.certPem, ca.certPem, 'org0', { ...rules, pins: { org0: pinned.publicKey } })).message,
    ).toMatch(/does not match the pinned fingerprint sha256:[0-9a-f]{64} \(policy securePeers\.org0\)/);
  });

  it('issue 37: a seed rebuilt from shares is checked against its commitment; a wrong share is found and left out', () => {
    const seed = new Uint8Array(randomBytes(32));
    const commitment = seedCommitment('j', 'a', seed);
    const shares = splitSecret(seed, 3, 2);
    const poisoned = [{ x: shares[0]!.x, y: shares[0]!.y.map((b) => b ^ 0x5a) }, shares[1]!, shares[2]!];
    // The first t shares include the wrong one: plain combination gives a wrong seed.
    expect(seedCommitment('j', 'a', combineShares(poisoned, 2))).not.toBe(commitment);
    const found = reconstructChecked(poisoned, 2, (s) => seedCommitment('j', 'a', s) === commitment)!;
    expect(Buffer.from(found.secret).equals(Buffer.from(seed))).toBe(true);
    expect(found.inconsistent).toEqual([1]);
    // Two wrong shares of three at t = 2: no subset gives the committed seed.
    const twoBad = [poisoned[0]!, { x: shares[1]!.x, y: shares[1]!.y.map((b) => b ^ 1) }, shares[2]!];
    expect(reconstructChecked(twoBad, 2, (s) => seedCommitment('j', 'a', s) === commitment)).toBeUndefined();
  });

  it('the consistency round: t survivors must have signed the very request an owner was shown', async () => {
    const ca = await createCertificateAuthority('consistency CA');
    const owners = ['a', 'b', 'c'];
    const certs = new Map<string, { certPem: string; keyPem: string }>();
    for (const o of owners) certs.set(o, await issueCertificate(ca, o));
    const certificates = new Map(owners.map((o) => [o, certs.get(o)!.certPem]));
    const request: { survivors: string[]; dropped: string[] } = { survivors: ['a', 'b', 'c'], dropped: [] };
    const other = { survivors: ['a', 'b'], dropped: ['c'] };
    const signed = (o: string, r: { survivors: string[]; dropped: string[] }) => ({
      owner: o,
      signature: signUnmaskRequest('j', r, certs.get(o)!.keyPem),
    });
    // Survivor order does not matter; two signatures over the same request reach t = 2.
    checkConfirmations('j', request, [signed('a', { survivors: ['c', 'b', 'a'], dropped: [] }), signed('b', request)], certificates, 2);
    // a signed another request: only b's counts for this one; c's signature presented as a's does not verify.
    const refused = coded(() =>
      checkConfirmations(
        'j',
        request,
        [signed('a', other), signed('b', request), { owner: 'a', signature: signed('c', request).signature }],
        certificates,
        2,
      ),
    );
    expect(refused.code).toBe(ErrorCode.SecureAggregation);
    expect(refused.message).toMatch(/only 1 survivor\(s\) signed the request this owner was shown, fewer than the threshold 2/);
    // A signature of an owner who is not a survivor of this request does not count.
    expect(coded(() => checkConfirmations('j', other, [signed('a', other), signed('c', other)], certificates, 2)).message).toMatch(
      /only 1 survivor/,
    );
  });
});
