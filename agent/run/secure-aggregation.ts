// The agent's half of secure aggregation (issue #18, DESIGN §8): round 0 (two X25519 key pairs, signed with the
// owner's certificate key, and a power-of-two bound per statistic), round 1 (Shamir shares of its mask key and its
// self-mask seed, sealed end to end for each other owner), masking its bundle into fixed point in Z/2⁶⁴, and the
// unmasking, where it reveals only what SecAgg+ allows (never both kinds of share of one owner).
//
// Its secrets stay in <work dir>/<job>/secure.json (0600): a restarted agent keeps its keys (its masks depend on them)
// and keeps refusing what it refused before.
import { createHash, randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { z } from 'zod';

import type { FederationClient } from '../../client/index.js';
import { ErrorCode, failpoint, fileError, GramfuseError } from '../../shared/index.js';
import type { FileLedger } from '../../shared/audit/index.js';
import { BundleManifest } from '../../shared/merge/index.js';
import {
  agreedSecret,
  boundLog2Of,
  checkConfirmations,
  checkUnmaskRequest,
  type FixedPointScale,
  generateAgreementKeys,
  maskSlice,
  openShare,
  parseSecure,
  type RoundView,
  sealShare,
  ShareGuard,
  SharePayload,
  signAdvertisement,
  signUnmaskRequest,
  splitSecret,
  statisticScale,
  verifyAdvertisement,
  verifyPeerCertificate,
} from '../../shared/secure-aggregation/index.js';
import { canonicalJson, readPrivateFile, writePrivateFile } from '../../shared/security/index.js';

const SLICE = 1 << 20;

/** <job dir>/secure.json: the owner's secrets for this job. */
const SecureSecrets = z
  .object({
    mask: z.object({ publicKeyPem: z.string(), privateKeyPem: z.string() }).strict(),
    encryption: z.object({ publicKeyPem: z.string(), privateKeyPem: z.string() }).strict(),
    selfSeed: z.string(),
    guard: z.record(z.string(), z.enum(['self-mask', 'mask-key'])),
    received: z.record(z.string(), SharePayload),
  })
  .strict();
type SecureSecrets = z.infer<typeof SecureSecrets>;

export interface SecureProgress {
  readonly phase: RoundView['phase'] | 'masking' | 'revealed';
  readonly message: string;
}

export interface SecureSessionOptions {
  readonly client: FederationClient;
  readonly jobId: string;
  readonly owner: string;
  readonly jobDir: string;
  readonly ledger: FileLedger;
  /** The job's Shamir threshold (from the job spec the owner approved): the round must use exactly it. */
  readonly threshold: number;
  /** The federation CA (to check the certificates relayed with the other owners' keys) and the owner's certificate key. */
  readonly tls: { readonly caPem: string; readonly keyPem: string } | undefined;
  /** How long to wait for the other owners in each round before giving up. @default 3600 */
  readonly waitSeconds?: number;
  readonly pollMs?: number;
  readonly onProgress?: (progress: SecureProgress) => void;
}

/** A masked bundle, uploaded as any bundle is: its manifest (ring64 statistics, masked digests) and where each lies. */
export interface MaskedBundle {
  readonly manifest: BundleManifest;
  readonly statisticsPath: string;
  readonly ranges: ReadonlyMap<string, { readonly begin: number; readonly end: number }>;
  /** Per statistic: the scale it was encoded with (its resolution is in the ledger). */
  readonly scales: ReadonlyMap<string, FixedPointScale>;
  /** Entries masked and the seconds it took (read, encode, mask, write), 0 when a masked bundle was reused. */
  readonly masking: { readonly entries: number; readonly seconds: number };
}

export class SecureSession {
  /** The round's owners' certificates, checked against the federation CA in round 0 (by `prepare`). */
  private readonly certificates = new Map<string, string>();

  private constructor(
    private readonly options: SecureSessionOptions,
    private secrets: SecureSecrets,
    private readonly path: string,
  ) {}

  /** Opens (or makes, 0600) the owner's secrets for this job. SECURE_AGGREGATION without mTLS. */
  static async open(options: SecureSessionOptions): Promise<SecureSession> {
    if (options.tls === undefined)
      throw new GramfuseError(
        ErrorCode.SecureAggregation,
        `job ${options.jobId} uses secure aggregation, which needs mTLS (--tls-ca, --tls-cert, --tls-key): the owner's keys are signed with its certificate`,
      );
    const path = join(options.jobDir, 'secure.json');
    let secrets: SecureSecrets;
    const exists = await stat(path).then(
      () => true,
      () => false,
    );
    if (exists) {
      secrets = parseSecure(SecureSecrets, await readPrivateFile(path, 'secure aggregation secrets'), path);
    } else {
      secrets = {
        mask: generateAgreementKeys(),
        encryption: generateAgreementKeys(),
        selfSeed: randomBytes(32).toString('base64'),
        guard: {},
        received: {},
      };
      await mkdir(options.jobDir, { recursive: true });
      await writePrivateFile(path, JSON.stringify(secrets), 'writing the secure aggregation secrets');
    }
    return new SecureSession(options, secrets, path);
  }

  private async saveSecrets(): Promise<void> {
    await writePrivateFile(this.path, JSON.stringify(this.secrets), 'writing the secure aggregation secrets');
  }

  private say(phase: SecureProgress['phase'], message: string): void {
    this.options.onProgress?.({ phase, message });
  }

  /** Polls the round until `ready` holds (the other owners answer at their own pace). */
  private async until(what: string, ready: (round: RoundView) => boolean): Promise<RoundView> {
    const { client, jobId } = this.options;
    const deadline = Date.now() + (this.options.waitSeconds ?? 3600) * 1000;
    let said = '';
    for (;;) {
      const round = await client.secure('round', jobId);
      if (ready(round)) return round;
      const status = await client.getJob(jobId);
      if (status.state === 'failed' || status.state === 'done')
        throw new GramfuseError(
          status.state === 'failed' ? ErrorCode.JobClosed : ErrorCode.SecureAggregation,
          `job ${jobId} is ${status.state} while this owner waited for ${what}${status.failureCode === '' ? '' : ` (${status.failureCode}: ${status.failureMessage})`}`,
          { facts: { job: jobId } },
        );
      if (Date.now() > deadline)
        throw new GramfuseError(
          ErrorCode.DeadlineExceeded,
          `job ${jobId}: waited ${this.options.waitSeconds ?? 3600} s for ${what}; run again to resume`,
          {
            facts: { job: jobId },
          },
        );
      if (said !== round.phase) this.say(round.phase, `waiting for ${what} (phase ${round.phase})`);
      said = round.phase;
      await new Promise((resolve) => setTimeout(resolve, this.options.pollMs ?? 200));
    }
  }

  /**
   * Rounds 0 and 1, then masking: returns the masked bundle to upload. A value past its declared bound (it cannot be,
   * unless the bundle changed) is SECURE_AGGREGATION with nothing written or sent.
   */
  async prepare(
    manifest: BundleManifest,
    statisticsPath: string,
    ranges: ReadonlyMap<string, { begin: number; end: number }>,
  ): Promise<MaskedBundle> {
    const { client, jobId, owner } = this.options;
    const tls = this.options.tls!;
    const bundle = await open(statisticsPath, 'r').catch((error: unknown) => {
      throw fileError(error, statisticsPath, 'reading the statistics bundle');
    });
    try {
      // Round 0: keys and bounds (only the power of two of each statistic's largest |value| leaves here).
      let round = await client.secure('round', jobId);
      if (!round.done.advertised) {
        if (round.phase !== 'advertising')
          throw new GramfuseError(
            ErrorCode.SecureAggregation,
            `job ${jobId}: its key round closed before ${owner} advertised (phase ${round.phase}); this owner is not in the secure sum`,
            { facts: { job: jobId } },
          );
        const bounds: Record<string, number> = {};
        for (const s of manifest.plan.statistics) bounds[s.id] = await this.bound(bundle, s, ranges);
        const ad = signAdvertisement(
          { job: jobId, owner, maskPublicKey: this.secrets.mask.publicKeyPem, encryptionPublicKey: this.secrets.encryption.publicKeyPem },
          tls.keyPem,
        );
        round = await client.secure('advertise', jobId, {
          maskPublicKey: ad.maskPublicKey,
          encryptionPublicKey: ad.encryptionPublicKey,
          signature: ad.signature,
          bounds,
        });
        this.say('advertising', `advertised keys and ${Object.keys(bounds).length} bounds`);
      }
      round = await this.until('the other owners’ keys', (r) => r.phase !== 'advertising');
      const members = round.advertisements.map((a) => a.owner);
      if (!members.includes(owner))
        throw new GramfuseError(ErrorCode.SecureAggregation, `job ${jobId}: ${owner} is not among the owners of the key round`, {
          facts: { job: jobId },
        });
      // Every relayed key is checked: the certificate against the federation CA, the signature against the certificate.
      for (const a of round.advertisements) {
        verifyPeerCertificate(a.certificatePem, tls.caPem, a.owner);
        verifyAdvertisement({ job: jobId, ...a }, a.certificatePem);
        this.certificates.set(a.owner, a.certificatePem);
      }
      const mine = round.advertisements.find((a) => a.owner === owner)!;
      if (mine.maskPublicKey !== this.secrets.mask.publicKeyPem || mine.encryptionPublicKey !== this.secrets.encryption.publicKeyPem)
        throw new GramfuseError(
          ErrorCode.SecureAggregation,
          `job ${jobId}: the coordinator relays other keys for ${owner} than it advertised`,
        );
      // The threshold is the job's (what the owner approved), and a majority of the round: with fewer, a few owners (or
      // one, at t = 1) could rebuild another's mask key from the shares it sent them.
      const threshold = round.threshold;
      if (threshold !== this.options.threshold || threshold <= members.length / 2 || threshold > members.length)
        throw new GramfuseError(
          ErrorCode.SecureAggregation,
          `job ${jobId}: the round's threshold ${threshold} is not the job's ${this.options.threshold} or not a majority of its ${members.length} owners; no share was sent`,
          { facts: { job: jobId, threshold } },
        );
      // Round 1: t-of-n shares of the mask key and the self-mask seed, each sealed for its recipient.
      if (!round.done.shared) {
        if (round.phase !== 'sharing')
          throw new GramfuseError(
            ErrorCode.SecureAggregation,
            `job ${jobId}: the share round closed before ${owner} shared; it is not in the secure sum`,
          );
        const keyShares = splitSecret(Buffer.from(this.secrets.mask.privateKeyPem, 'utf8'), members.length, threshold);
        const seedShares = splitSecret(Buffer.from(this.secrets.selfSeed, 'base64'), members.length, threshold);
        const shares = round.advertisements.map((a, i) => {
          const secret = agreedSecret(this.secrets.encryption.privateKeyPem, a.encryptionPublicKey, jobId, 'share-encryption');
          const payload: SharePayload = {
            x: keyShares[i]!.x,
            maskKey: Buffer.from(keyShares[i]!.y).toString('base64'),
            selfSeed: Buffer.from(seedShares[i]!.y).toString('base64'),
          };
          const sealed = sealShare(secret, Buffer.from(JSON.stringify(payload)), shareAad(jobId, owner, a.owner));
          return { to: a.owner, sealed: Buffer.from(sealed).toString('base64') };
        });
        await client.secure('share', jobId, { shares });
        this.say('sharing', `sent ${shares.length} sealed shares (threshold ${threshold})`);
      }
      failpoint('secure.shared'); // fault tests: an owner gone after key setup, before its upload
      round = await this.until('the other owners’ shares', (r) => r.phase !== 'advertising' && r.phase !== 'sharing');
      const sharers = round.sharers ?? [];
      if (!sharers.includes(owner))
        throw new GramfuseError(ErrorCode.SecureAggregation, `job ${jobId}: ${owner} is not among the owners whose shares went out`);
      const ads = new Map(round.advertisements.map((a) => [a.owner, a]));
      for (const { from, sealed } of round.inbox ?? []) {
        if (!sharers.includes(from) || this.secrets.received[from] !== undefined) continue;
        const secret = agreedSecret(this.secrets.encryption.privateKeyPem, ads.get(from)!.encryptionPublicKey, jobId, 'share-encryption');
        const opened = openShare(secret, Buffer.from(sealed, 'base64'), shareAad(jobId, from, owner));
        this.secrets.received[from] = parseSecure(SharePayload, Buffer.from(opened).toString('utf8'), `the share from ${from}`);
      }
      const missing = sharers.filter((o) => this.secrets.received[o] === undefined);
      if (missing.length > 0)
        throw new GramfuseError(
          ErrorCode.SecureAggregation,
          `job ${jobId}: no share arrived from ${missing.join(', ')}, though they are in the round`,
        );
      await this.saveSecrets();
      // Masking: fixed point with the common scale, the self mask, and the pairwise masks with every other sharer.
      const pairSeeds = new Map(
        sharers
          .filter((o) => o !== owner)
          .map((o) => [o, agreedSecret(this.secrets.mask.privateKeyPem, ads.get(o)!.maskPublicKey, jobId, 'mask')] as const),
      );
      const scales = new Map<string, FixedPointScale>();
      for (const s of manifest.plan.statistics) scales.set(s.id, statisticScale(round.scale!.bounds[s.id]!, round.scale!.owners));
      const coarsest = [...scales.entries()].reduce((a, b) => (b[1].resolution > a[1].resolution ? b : a));
      this.say(
        'masking',
        `masking ${manifest.plan.statistics.length} statistics for ${sharers.length} owners in fixed point (coarsest: ${coarsest[0]}, ±2^${coarsest[1].boundLog2} with ${coarsest[1].fractionBits} fraction bits, resolution ${coarsest[1].resolution.toExponential(1)} per entry of the sum)`,
      );
      const maskStarted = performance.now();
      const masked = await this.mask(bundle, manifest, ranges, scales, pairSeeds);
      const masking = {
        entries: masked.reused ? 0 : masked.manifest.plan.totals.bytes / 8,
        seconds: masked.reused ? 0 : (performance.now() - maskStarted) / 1000,
      };
      await this.options.ledger.append('secure.masked', jobId, {
        scaleOwners: round.scale!.owners,
        sharers,
        threshold,
        statistics: masked.manifest.plan.statistics.map((s) => {
          const scale = scales.get(s.id)!;
          return {
            id: s.id,
            sha256: s.sha256,
            bytes: s.bytes,
            plaintextSha256: manifest.plan.statistics.find((p) => p.id === s.id)!.sha256 ?? null,
            boundLog2: scale.boundLog2,
            fractionBits: scale.fractionBits,
            resolution: scale.resolution,
          };
        }),
      });
      return { manifest: masked.manifest, statisticsPath: masked.statisticsPath, ranges: masked.ranges, scales, masking };
    } finally {
      await bundle.close();
    }
  }

  /** The smallest b with every |value| of the statistic ≤ 2^b, read a slice at a time. */
  private async bound(
    bundle: FileHandle,
    s: BundleManifest['plan']['statistics'][number],
    ranges: ReadonlyMap<string, { begin: number; end: number }>,
  ): Promise<number> {
    let bound = -1074;
    await forSlices(bundle, s, ranges, (values) => {
      bound = Math.max(bound, boundLog2Of(values));
    });
    return bound;
  }

  private async mask(
    bundle: FileHandle,
    manifest: BundleManifest,
    ranges: ReadonlyMap<string, { begin: number; end: number }>,
    scales: ReadonlyMap<string, FixedPointScale>,
    pairSeeds: ReadonlyMap<string, Uint8Array>,
  ): Promise<Omit<MaskedBundle, 'scales' | 'masking'> & { reused: boolean }> {
    const { jobId, owner } = this.options;
    const dir = join(this.options.jobDir, 'masked');
    const statisticsPath = join(dir, 'statistics.bin');
    const manifestPath = join(dir, 'manifest.json');
    // Masks are deterministic (keys, seeds, scales), so a masked bundle written before a restart is the same one.
    const existing = await readFile(manifestPath, 'utf8').then(
      (text) => BundleManifest.safeParse(JSON.parse(text)),
      () => undefined,
    );
    const rangesOf = (m: BundleManifest): Map<string, { begin: number; end: number }> => {
      const out = new Map<string, { begin: number; end: number }>();
      let at = 0;
      for (const s of m.plan.statistics) {
        out.set(s.id, { begin: at, end: at + s.bytes });
        at += s.bytes;
      }
      return out;
    };
    if (existing?.success === true) return { manifest: existing.data, statisticsPath, ranges: rangesOf(existing.data), reused: true };
    await mkdir(dir, { recursive: true });
    const tmp = `${statisticsPath}.tmp-${process.pid}`;
    const out = await open(tmp, 'w', 0o600);
    const selfSeed = new Uint8Array(Buffer.from(this.secrets.selfSeed, 'base64'));
    const statistics: BundleManifest['plan']['statistics'] = [];
    try {
      let at = 0;
      for (const s of manifest.plan.statistics) {
        const hash = createHash('sha256');
        let offset = 0;
        await forSlices(bundle, s, ranges, async (values) => {
          const vector = maskSlice(values, offset, scales.get(s.id)!, { job: jobId, statistic: s.id, self: owner, selfSeed, pairSeeds });
          const bytes = new Uint8Array(vector.buffer, vector.byteOffset, vector.byteLength);
          hash.update(bytes);
          await out.write(bytes, 0, bytes.byteLength, at + offset * 8);
          offset += values.length;
        });
        const { rows: _rows, ...rest } = s;
        statistics.push({ ...rest, dtype: 'ring64', bytes: offset * 8, sha256: hash.digest('hex') });
        at += offset * 8;
      }
      await out.sync();
    } catch (error) {
      await out.close();
      await rm(tmp, { force: true });
      throw error;
    }
    await out.close();
    await rename(tmp, statisticsPath);
    // Row counts stay home: they would tell the coordinator how much data each owner has (the agent checked its policy).
    const masked: BundleManifest = {
      ...manifest,
      plan: {
        ...manifest.plan,
        statistics,
        totals: { statistics: statistics.length, bytes: statistics.reduce((sum, s) => sum + s.bytes, 0) },
      },
      settings: { secureAggregation: true },
    };
    await writePrivateFile(manifestPath, JSON.stringify(masked, null, 2), 'writing the masked manifest');
    return { manifest: masked, statisticsPath, ranges: rangesOf(masked), reused: false };
  }

  /**
   * Unmasking: waits for the coordinator's request, checks it (disjoint survivors and dropped owners, at least t
   * survivors, never both kinds of share of one owner — recorded before anything is sent), then reveals exactly it.
   * Returns false when the sum needed nothing more from this owner (summed already, or revealed before).
   */
  async reveal(): Promise<boolean> {
    const { client, jobId } = this.options;
    const tls = this.options.tls!;
    let round = await this.until(
      'the unmasking request',
      (r) => r.phase === 'confirming' || r.phase === 'unmasking' || r.phase === 'summed',
    );
    if (round.phase === 'summed' || round.done.revealed || round.unmask === undefined) return false;
    // The consistency round: this owner signs the request it was shown (after checking it, recording nothing yet).
    if (round.phase === 'confirming' && !round.done.confirmed) {
      checkUnmaskRequest(jobId, round.unmask, round.sharers ?? [], round.threshold, new ShareGuard(jobId, this.secrets.guard));
      await client.secure('confirm', jobId, { signature: signUnmaskRequest(jobId, round.unmask, tls.keyPem) });
      this.say(
        'confirming',
        `signed the unmasking request (${round.unmask.survivors.length} survivors, ${round.unmask.dropped.length} dropped)`,
      );
    }
    const shown = round.unmask;
    round = await this.until('the other survivors’ confirmations', (r) => r.phase === 'unmasking' || r.phase === 'summed');
    if (round.phase === 'summed' || round.done.revealed || round.unmask === undefined) return false;
    if (canonicalJson(round.unmask) !== canonicalJson(shown))
      throw new GramfuseError(
        ErrorCode.SecureAggregation,
        `job ${jobId}: the coordinator changed the unmasking request after this owner signed it; nothing was revealed`,
      );
    const { survivors, dropped } = round.unmask;
    // At least t survivors signed this very request, each with the certificate checked in round 0 (prepare).
    if (this.certificates.size === 0)
      throw new GramfuseError(ErrorCode.Internal, `job ${jobId}: the unmasking needs the round-0 certificates; prepare() runs first`);
    checkConfirmations(jobId, round.unmask, round.confirmations ?? [], this.certificates, round.threshold);
    const guard = new ShareGuard(jobId, this.secrets.guard);
    checkUnmaskRequest(jobId, round.unmask, round.sharers ?? [], round.threshold, guard);
    this.secrets.guard = guard.toJSON();
    await this.saveSecrets();
    const share = (owner: string, kind: 'self-mask' | 'mask-key') => {
      const held = this.secrets.received[owner];
      if (held === undefined)
        throw new GramfuseError(ErrorCode.SecureAggregation, `job ${jobId}: this owner holds no share of ${owner}; nothing was revealed`);
      return { owner, kind, x: held.x, y: kind === 'self-mask' ? held.selfSeed : held.maskKey };
    };
    await client.secure('reveal', jobId, {
      shares: [...survivors.map((o) => share(o, 'self-mask')), ...dropped.map((o) => share(o, 'mask-key'))],
    });
    await this.options.ledger.append('secure.revealed', jobId, { selfMaskSharesOf: survivors, maskKeySharesOf: dropped });
    this.say(
      'revealed',
      `revealed self-mask shares of ${survivors.length} survivors and mask-key shares of ${dropped.length} dropped owners`,
    );
    return true;
  }
}

const shareAad = (job: string, from: string, to: string): string => `gramfuse secagg share\u0000${job}\u0000${from}\u0000${to}`;

/** Calls `each` with the statistic's values, a slice at a time (float32 or float64 as stored). */
async function forSlices(
  bundle: FileHandle,
  s: BundleManifest['plan']['statistics'][number],
  ranges: ReadonlyMap<string, { begin: number; end: number }>,
  each: (values: Float32Array | Float64Array) => void | Promise<void>,
): Promise<void> {
  const range = ranges.get(s.id);
  if (range === undefined) throw new GramfuseError(ErrorCode.BundleInvalid, `statistic ${s.id} is not in the bundle`);
  const width = s.dtype === 'float32' ? 4 : 8;
  const total = (range.end - range.begin) / width;
  for (let start = 0; start < total; start += SLICE) {
    const length = Math.min(SLICE, total - start);
    const bytes = new Uint8Array(length * width);
    const { bytesRead } = await bundle.read(bytes, 0, bytes.byteLength, range.begin + start * width);
    if (bytesRead !== bytes.byteLength) throw new GramfuseError(ErrorCode.BundleInvalid, `statistic ${s.id} ends early in the bundle`);
    await each(width === 4 ? new Float32Array(bytes.buffer, 0, length) : new Float64Array(bytes.buffer, 0, length));
  }
}
