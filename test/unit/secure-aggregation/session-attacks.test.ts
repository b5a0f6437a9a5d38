// The agent's SecureSession against a malicious coordinator, in one process (no sockets): a scripted coordinator
// (`secure` and `getJob` answered from memory) relays the genuine signed advertisements of simulated honest or
// colluding owners, then attacks as the independent review of issue 37 found (swapped keys in a later reply, a repeated
// owner, a split scale). Each test asserts the refusal and that the attacker's recovery of alice's secrets fails.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { checkApprovedBefore, SecureSession } from '../../../agent/index.js';
import { ErrorCode, type GramfuseError } from '../../../shared/index.js';
import { BundleManifest, MergeSpec } from '../../../shared/merge/index.js';
import {
  agreedSecret,
  type AgreementKeys,
  checkConfirmations,
  combineShares,
  generateAgreementKeys,
  openShare,
  type RoundView,
  sealShare,
  seedCommitment,
  signAdvertisement,
  signUnmaskRequest,
  splitSecret,
} from '../../../shared/secure-aggregation/index.js';
import { certificateFingerprints, createCertificateAuthority, issueCertificate } from '../../../shared/security/index.js';

type Ad = RoundView['advertisements'][number];
type Done = RoundView['done'];
interface Peer {
  readonly name: string;
  readonly certPem: string;
  readonly keyPem: string;
  readonly mask: AgreementKeys;
  readonly enc: AgreementKeys;
  readonly seed: Uint8Array;
  readonly ad: Ad;
}
interface Sent {
  aliceAd?: Omit<Ad, 'certificatePem' | 'owner'>;
  bounds?: Record<string, number>;
  shares?: { to: string; sealed: string }[];
  confirmed?: boolean;
  reveal?: unknown;
}

const JOB = 'attack';
const aad = (from: string, to: string): string => `gramfuse secagg share\u0000${JOB}\u0000${from}\u0000${to}`;
const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

let pki:
  | {
      ca: Awaited<ReturnType<typeof createCertificateAuthority>>;
      server: { certPem: string };
      certs: Record<string, { certPem: string; keyPem: string }>;
    }
  | undefined;
async function federation(): Promise<NonNullable<typeof pki>> {
  if (pki !== undefined) return pki;
  const ca = await createCertificateAuthority('fed-ca');
  const certs: Record<string, { certPem: string; keyPem: string }> = {};
  for (const o of ['alice', 'bob', 'carol']) certs[o] = await issueCertificate(ca, o, { role: 'owner' });
  const server = await issueCertificate(ca, 'coordinator', { hosts: ['localhost'] });
  return (pki = { ca, server, certs });
}

function peer(name: string, cert: { certPem: string; keyPem: string }, bounds: Record<string, number> = { g0: 2 }): Peer {
  const mask = generateAgreementKeys();
  const enc = generateAgreementKeys();
  const seed = randomBytes(32);
  const { job: _job, ...signed } = signAdvertisement(
    {
      job: JOB,
      owner: name,
      maskPublicKey: mask.publicKeyPem,
      encryptionPublicKey: enc.publicKeyPem,
      selfSeedCommitment: seedCommitment(JOB, name, seed),
      bounds,
    },
    cert.keyPem,
  );
  return { name, ...cert, mask, enc, seed, ad: { ...signed, certificatePem: cert.certPem } };
}

/** The share a peer deals alice (alice is x = `x` of `n`), sealed as a real agent seals it. */
function shareFor(p: Peer, alicePublicEncryption: string, x: number, n: number, t: number): { from: string; sealed: string } {
  const key = splitSecret(Buffer.from(p.mask.privateKeyPem), n, t)[x - 1]!;
  const seed = splitSecret(p.seed, n, t)[x - 1]!;
  const payload = { x, maskKey: Buffer.from(key.y).toString('base64'), selfSeed: Buffer.from(seed.y).toString('base64') };
  const secret = agreedSecret(p.enc.privateKeyPem, alicePublicEncryption, JOB, 'share-encryption');
  return {
    from: p.name,
    sealed: Buffer.from(sealShare(secret, Buffer.from(JSON.stringify(payload)), aad(p.name, 'alice'))).toString('base64'),
  };
}

/**
 * alice's session against a scripted coordinator. `script` returns the reply to every call once alice advertised
 * (phase by what alice has sent); before that, an advertising round.
 */
async function aliceAgainst(
  script: (sent: Sent, aliceAd: Ad) => Omit<RoundView, 'job' | 'threshold' | 'minOwners'>,
  terms = { threshold: 3, minOwners: 3, participants: ['alice', 'bob', 'carol'] },
  pins: Record<string, string> = {},
): Promise<{
  session: SecureSession;
  sent: Sent;
  values: Float64Array;
  prepare: () => ReturnType<SecureSession['prepare']>;
  recollected: (next: Float64Array, sha256: string) => ReturnType<SecureSession['prepare']>;
}> {
  const { ca, server, certs } = await federation();
  const sent: Sent = {};
  const client = {
    identity: 'alice',
    serverCertificate: () => server.certPem,
    getJob: async () => Promise.resolve({ state: 'collecting', failureCode: '', failureMessage: '' }),
    secure: async (call: string, _job: string, body?: Record<string, unknown>): Promise<RoundView> => {
      await Promise.resolve();
      if (call === 'advertise') {
        sent.aliceAd = body as Omit<Ad, 'certificatePem' | 'owner'>;
        sent.bounds = sent.aliceAd.bounds;
      }
      if (call === 'share') sent.shares = (body as { shares: { to: string; sealed: string }[] }).shares;
      if (call === 'confirm') sent.confirmed = true;
      if (call === 'reveal') sent.reveal = body;
      const base = { job: JOB, threshold: terms.threshold, minOwners: terms.minOwners };
      if (sent.aliceAd === undefined)
        return {
          ...base,
          phase: 'advertising',
          advertisements: [],
          done: { advertised: false, shared: false, confirmed: false, revealed: false },
        };
      return { ...base, ...script(sent, { owner: 'alice', ...sent.aliceAd, certificatePem: certs.alice!.certPem }) };
    },
  };
  const dir = await mkdtemp(join(tmpdir(), 'secure-attack-'));
  dirs.push(dir);
  const values = new Float64Array(8).map((_, i) => (i - 3.5) * 0.75);
  const statisticsPath = join(dir, 'stats.bin');
  await writeFile(statisticsPath, Buffer.from(values.buffer));
  const manifestOf = (sha256: string): BundleManifest =>
    BundleManifest.parse({
      format: 'gramfuse-statistics-bundle',
      version: 1,
      tool: { name: 'gramfuse', version: '0.1.0' },
      createdAt: '2026-12-08T00:00:00Z',
      plan: {
        owner: 'alice',
        fingerprint: `sha256:${'0'.repeat(64)}`,
        spec: MergeSpec.parse({}),
        statistics: [{ id: 'g0', kind: 'gram', tensors: ['w'], shape: [8], dtype: 'float64', packing: 'dense', bytes: 64, sha256 }],
        totals: { statistics: 1, bytes: 64 },
        policy: { minRowsPerGroup: 0 },
      },
      settings: {},
    });
  const session = await SecureSession.open({
    client: client as never,
    jobId: JOB,
    owner: 'alice',
    jobDir: dir,
    ledger: { append: async () => Promise.resolve({}) } as never,
    approved: terms,
    pins,
    tls: { caPem: ca.certPem, keyPem: certs.alice!.keyPem },
    pollMs: 1,
    waitSeconds: 5,
  });
  const ranges = new Map([['g0', { begin: 0, end: 64 }]]);
  return {
    session,
    sent,
    values,
    prepare: () => session.prepare(manifestOf('a'.repeat(64)), statisticsPath, ranges),
    // A re-collected plaintext bundle (other values, other digest) at the same path.
    recollected: async (next: Float64Array, sha256: string) => {
      await writeFile(statisticsPath, Buffer.from(next.buffer));
      return session.prepare(manifestOf(sha256), statisticsPath, ranges);
    },
  };
}

/** The honest common scale: n owners, the largest of alice's bound and the peers' (2). */
const scaleOf = (sent: Sent, owners: number): { owners: number; bounds: Record<string, number> } => ({
  owners,
  bounds: { g0: Math.max(sent.bounds!.g0!, 2) },
});
const done = (shared: boolean, confirmed = false): Done => ({ advertised: true, shared, confirmed, revealed: false });
const failure = async (promise: Promise<unknown>): Promise<GramfuseError> =>
  promise.then(
    () => {
      throw new Error('expected a refusal');
    },
    (error: unknown) => error as GramfuseError,
  );

describe('SecureSession against a malicious coordinator (issue 37 review)', () => {
  it('finding 1: peers’ mask keys swapped in a reply after round 0 are refused before masking; nothing is revealed, the self seed is not rebuilt', async () => {
    const { certs } = await federation();
    const bob = peer('bob', certs.bob!);
    const carol = peer('carol', certs.carol!);
    const evil = { bob: generateAgreementKeys(), carol: generateAgreementKeys() };
    const request = { survivors: ['alice', 'bob', 'carol'], dropped: [] as string[] };
    let uploaded = false;
    const pins = {
      bob: certificateFingerprints(certs.bob!.certPem).certificate,
      carol: certificateFingerprints(certs.carol!.certPem).certificate,
    };
    const attack = await aliceAgainst(
      (sent, alice) => {
        const genuine = [alice, bob.ad, carol.ad];
        const scale = scaleOf(sent, 3);
        if (sent.shares === undefined) return { phase: 'sharing', advertisements: genuine, scale, done: done(false) };
        // After the share round: the coordinator's own mask keys in place of bob's and carol's (signatures now stale).
        const swapped = [
          alice,
          { ...bob.ad, maskPublicKey: evil.bob.publicKeyPem },
          { ...carol.ad, maskPublicKey: evil.carol.publicKeyPem },
        ];
        const inbox = [
          { from: 'alice', sealed: sent.shares.find((s) => s.to === 'alice')!.sealed },
          shareFor(bob, alice.encryptionPublicKey, 1, 3, 3),
          shareFor(carol, alice.encryptionPublicKey, 1, 3, 3),
        ];
        const common = { advertisements: swapped, scale, sharers: ['alice', 'bob', 'carol'], inbox };
        if (!uploaded) return { ...common, phase: 'uploading', done: done(true) };
        if (sent.confirmed !== true) return { ...common, phase: 'confirming', unmask: request, done: done(true) };
        const confirmations = ['alice', 'bob', 'carol'].map((o) => ({
          owner: o,
          signature: signUnmaskRequest(JOB, request, certs[o]!.keyPem),
        }));
        return { ...common, phase: 'unmasking', unmask: request, confirmations, done: done(true, true) };
      },
      undefined,
      pins,
    );
    const refused = await failure(attack.prepare());
    expect(refused.code).toBe(ErrorCode.SecureAggregation);
    expect(refused.message).toMatch(/the coordinator now relays other keys than the key set this owner checked and shared with/);
    uploaded = true;
    // The attack's recovery step needs alice's self-mask share from alice herself: no reveal, no confirmation leaves her.
    await expect(attack.session.reveal()).rejects.toThrow();
    expect(attack.sent.reveal).toBeUndefined();
    expect(attack.sent.confirmed).toBeUndefined();
    // bob's and carol's shares of alice's seed (2 of t = 3) do not rebuild it.
    const aliceEnc = attack.sent.aliceAd!.encryptionPublicKey;
    const held = (['bob', 'carol'] as const).map((o) => {
      const p = o === 'bob' ? bob : carol;
      const secret = agreedSecret(p.enc.privateKeyPem, aliceEnc, JOB, 'share-encryption');
      const share = attack.sent.shares!.find((s) => s.to === o)!;
      const payload = JSON.parse(Buffer.from(openShare(secret, Buffer.from(share.sealed, 'base64'), aad('alice', o))).toString('utf8')) as {
        x: number;
        selfSeed: string;
      };
      return { x: payload.x, y: new Uint8Array(Buffer.from(payload.selfSeed, 'base64')) };
    });
    expect(seedCommitment(JOB, 'alice', combineShares(held, 2))).not.toBe(attack.sent.aliceAd!.selfSeedCommitment);
  });

  it('finding 1: a key swapped only in the unmasking round’s reply is refused there; nothing is signed or revealed', async () => {
    const { certs } = await federation();
    const bob = peer('bob', certs.bob!);
    const carol = peer('carol', certs.carol!);
    const request = { survivors: ['alice', 'bob', 'carol'], dropped: [] as string[] };
    let uploaded = false;
    const attack = await aliceAgainst((sent, alice) => {
      const genuine = [alice, bob.ad, carol.ad];
      const scale = scaleOf(sent, 3);
      if (sent.shares === undefined) return { phase: 'sharing', advertisements: genuine, scale, done: done(false) };
      const inbox = [
        { from: 'alice', sealed: sent.shares.find((s) => s.to === 'alice')!.sealed },
        shareFor(bob, alice.encryptionPublicKey, 1, 3, 3),
        shareFor(carol, alice.encryptionPublicKey, 1, 3, 3),
      ];
      const common = { scale, sharers: ['alice', 'bob', 'carol'], inbox };
      if (!uploaded) return { ...common, advertisements: genuine, phase: 'uploading', done: done(true) };
      const swapped = [alice, { ...bob.ad, maskPublicKey: generateAgreementKeys().publicKeyPem }, carol.ad];
      return { ...common, advertisements: swapped, phase: 'confirming', unmask: request, done: done(true) };
    });
    await attack.prepare();
    uploaded = true;
    const refused = await failure(attack.session.reveal());
    expect(refused.code).toBe(ErrorCode.SecureAggregation);
    expect(refused.message).toMatch(/other keys than the key set this owner checked/);
    expect(attack.sent.confirmed).toBeUndefined();
    expect(attack.sent.reveal).toBeUndefined();
  });

  it('finding 2: a colluder relayed three times (alice, carol, carol, carol) is refused before any share is sent; carol holds no share', async () => {
    const { certs } = await federation();
    const carol = peer('carol', certs.carol!);
    const attack = await aliceAgainst(
      (sent, alice) => ({
        phase: 'sharing',
        advertisements: [alice, carol.ad, carol.ad, carol.ad],
        scale: scaleOf(sent, 4),
        done: done(false),
      }),
      undefined,
      { carol: certificateFingerprints(certs.carol!.certPem).certificate },
    );
    const refused = await failure(attack.prepare());
    expect(refused.code).toBe(ErrorCode.SecureAggregation);
    expect(refused.message).toMatch(/carol appears more than once in its advertisements/);
    // The PoC's recovery opens the shares addressed to carol: there are none.
    expect(attack.sent.shares).toBeUndefined();
  });

  it('finding 2: a repeated sharer is refused before masking', async () => {
    const { certs } = await federation();
    const bob = peer('bob', certs.bob!);
    const carol = peer('carol', certs.carol!);
    const attack = await aliceAgainst((sent, alice) => {
      const genuine = [alice, bob.ad, carol.ad];
      const scale = scaleOf(sent, 3);
      if (sent.shares === undefined) return { phase: 'sharing', advertisements: genuine, scale, done: done(false) };
      const inbox = [
        { from: 'alice', sealed: sent.shares.find((s) => s.to === 'alice')!.sealed },
        shareFor(carol, alice.encryptionPublicKey, 1, 3, 3),
      ];
      return { phase: 'uploading', advertisements: genuine, scale, sharers: ['alice', 'carol', 'carol'], inbox, done: done(true) };
    });
    const refused = await failure(attack.prepare());
    expect(refused.code).toBe(ErrorCode.SecureAggregation);
    expect(refused.message).toMatch(/carol appears more than once in its sharers/);
  });

  it('finding 3: a scale of the coordinator’s choosing (alice’s own tight bound, the others signed 2^40) is refused before masking; no share leaves', async () => {
    const { certs } = await federation();
    const bob = peer('bob', certs.bob!, { g0: 40 });
    const carol = peer('carol', certs.carol!, { g0: 40 });
    const attack = await aliceAgainst((sent, alice) => ({
      phase: 'sharing',
      advertisements: [alice, bob.ad, carol.ad],
      // alice is told the bound she declared; bob and carol would be told 2^40: decoding the sum at alice's scale
      // would give her statistic alone.
      scale: { owners: 3, bounds: { g0: sent.bounds!.g0! } },
      done: done(false),
    }));
    const refused = await failure(attack.prepare());
    expect(refused.code).toBe(ErrorCode.SecureAggregation);
    expect(refused.message).toMatch(
      /the round's fixed-point scale is refused: it is not the one the owners' signed bounds give \(3 owners; statistic g0: relayed 2\^2, signed 2\^40\)/,
    );
    expect(attack.sent.shares).toBeUndefined();
  });

  it('finding 3: a confirmation signs the key set (so the bounds and scale): t signatures from owners shown another key set do not count', async () => {
    const { certs } = await federation();
    const request = { survivors: ['alice', 'bob', 'carol'], dropped: [] as string[] };
    const certificates = new Map(['alice', 'bob', 'carol'].map((o) => [o, certs[o]!.certPem]));
    const mine = 'a'.repeat(64);
    const theirs = 'b'.repeat(64);
    const signedOver = (o: string, keySet: string) => ({
      owner: o,
      signature: signUnmaskRequest(JOB, { ...request, keySet }, certs[o]!.keyPem),
    });
    // Same request, same transcript: t = 2 reached.
    checkConfirmations(JOB, { ...request, keySet: mine }, [signedOver('bob', mine), signedOver('carol', mine)], certificates, 2);
    // Same request, but bob and carol were shown another key set (another U₁, other bounds, so another scale).
    const refused = (() => {
      try {
        checkConfirmations(
          JOB,
          { ...request, keySet: mine },
          [signedOver('alice', mine), signedOver('bob', theirs), signedOver('carol', theirs)],
          certificates,
          2,
        );
      } catch (error) {
        return error as GramfuseError;
      }
      throw new Error('expected a refusal');
    })();
    expect(refused.code).toBe(ErrorCode.SecureAggregation);
    expect(refused.message).toMatch(/only 1 survivor\(s\) signed the request this owner was shown, fewer than the threshold 2/);
  });

  /** A SecureSession opened (state written under <dir>/secure/) as a first run does, against a coordinator presenting `server`. */
  async function firstRun(
    dir: string,
    server: string,
    approved: { threshold: number; minOwners: number; participants: string[] },
  ): Promise<SecureSession> {
    const { ca, certs } = await federation();
    return SecureSession.open({
      client: { identity: 'alice', serverCertificate: () => server } as never,
      jobId: JOB,
      owner: 'alice',
      jobDir: dir,
      ledger: { append: async () => Promise.resolve({}) } as never,
      approved,
      tls: { caPem: ca.certPem, keyPem: certs.alice!.keyPem },
    });
  }
  const TERMS = { threshold: 3, minOwners: 3, participants: ['alice', 'bob', 'carol'] };

  it('finding 4: a job approved with secure aggregation, rerun as a plaintext job, is refused before anything is collected or sent', async () => {
    const { server } = await federation();
    const dir = await mkdtemp(join(tmpdir(), 'secure-attack-'));
    dirs.push(dir);
    // Never approved secure, no policy: a plaintext job goes ahead (the check can pass).
    await expect(checkApprovedBefore(JOB, dir, [], undefined)).resolves.toBeUndefined();
    // The owner's policy requires secure aggregation: refused.
    const policy = await failure(checkApprovedBefore(JOB, dir, [], undefined, true));
    expect(policy.code).toBe(ErrorCode.PolicyViolation);
    expect(policy.message).toMatch(/rule require-secure-aggregation: job attack does not use secure aggregation/);
    // The ledger's plan.approved record carries secure terms: the rerun's `privacy: {}` is refused.
    const byLedger = await failure(checkApprovedBefore(JOB, dir, [TERMS], undefined));
    expect(byLedger.code).toBe(ErrorCode.SecureAggregation);
    expect(byLedger.message).toMatch(
      /now reports this job without secure aggregation, but this owner approved it with secure aggregation \(the plan.approved ledger record\)/,
    );
    // Only the secure state is left (a ledger moved away): still refused.
    await firstRun(dir, server.certPem, TERMS);
    expect(await readdir(join(dir, 'secure'))).toHaveLength(1);
    const byState = await failure(checkApprovedBefore(JOB, dir, [], undefined));
    expect(byState.code).toBe(ErrorCode.SecureAggregation);
    expect(byState.message).toMatch(/plaintext statistics are never sent for it: nothing was sent/);
  });

  it('finding 5: another server certificate does not bring other terms (t = 2 and an extra participant mallory): refused, no new state', async () => {
    const { ca, server } = await federation();
    const dir = await mkdtemp(join(tmpdir(), 'secure-attack-'));
    dirs.push(dir);
    await firstRun(dir, server.certPem, TERMS);
    const rotated = await issueCertificate(ca, 'coordinator', { hosts: ['localhost'] });
    const refused = await failure(
      firstRun(dir, rotated.certPem, { threshold: 2, minOwners: 3, participants: ['alice', 'bob', 'carol', 'mallory'] }),
    );
    expect(refused.code).toBe(ErrorCode.SecureAggregation);
    expect(refused.message).toMatch(
      /the coordinator now reports other secure-aggregation terms \(threshold 2, minOwners 3, participants alice, bob, carol, mallory\) than this owner approved \(threshold 3, minOwners 3, participants alice, bob, carol\); nothing was sent/,
    );
    // No fresh state (keys for mallory) was made under the new certificate.
    expect(await readdir(join(dir, 'secure'))).toHaveLength(1);
    // The same terms under the new certificate are fine; other terms against the ledger's approval alone are refused.
    await expect(firstRun(dir, rotated.certPem, TERMS)).resolves.toBeDefined();
    const fresh = await mkdtemp(join(tmpdir(), 'secure-attack-'));
    dirs.push(fresh);
    const byLedger = await failure(checkApprovedBefore(JOB, fresh, [TERMS], { ...TERMS, threshold: 2 }));
    expect(byLedger.message).toMatch(
      /than this owner approved \(threshold 3, .*\); nothing was sent \(the approval is in the plan.approved ledger record\)/,
    );
  });

  it('LOW: a masked bundle is reused only for the same plaintext bundle and scale: a re-collected one is refused, never masked twice', async () => {
    const { certs } = await federation();
    const bob = peer('bob', certs.bob!);
    const carol = peer('carol', certs.carol!);
    const attack = await aliceAgainst((sent, alice) => {
      const genuine = [alice, bob.ad, carol.ad];
      const scale = scaleOf(sent, 3);
      if (sent.shares === undefined) return { phase: 'sharing', advertisements: genuine, scale, done: done(false) };
      const inbox = [
        { from: 'alice', sealed: sent.shares.find((s) => s.to === 'alice')!.sealed },
        shareFor(bob, alice.encryptionPublicKey, 1, 3, 3),
        shareFor(carol, alice.encryptionPublicKey, 1, 3, 3),
      ];
      return { phase: 'uploading', advertisements: genuine, scale, sharers: ['alice', 'bob', 'carol'], inbox, done: done(true) };
    });
    const first = await attack.prepare();
    expect(first.masking.entries).toBe(8);
    const firstBytes = Buffer.from(await readFile(first.statisticsPath));
    // The same source again (a restart): reused.
    expect((await attack.prepare()).masking.entries).toBe(0);
    // Re-collected (other values, same bound): neither the stale masked bundle nor a second masking under the same
    // masks (their difference would be the plaintexts' difference).
    const refused = await failure(
      attack.recollected(
        attack.values.map((v) => v / 2),
        'b'.repeat(64),
      ),
    );
    expect(refused.code).toBe(ErrorCode.SecureAggregation);
    expect(refused.message).toMatch(/already masked another plaintext bundle .* nothing was masked or sent/);
    expect(Buffer.from(await readFile(first.statisticsPath)).equals(firstBytes)).toBe(true);
  });
});
