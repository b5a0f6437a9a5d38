// The agent's half of secure aggregation (issue #18, DESIGN §8): round 0 (two X25519 key pairs and a commitment to
// the self-mask seed, signed with the owner's certificate key, and a power-of-two bound per statistic), round 1 (Shamir
// shares of its mask key and its self-mask seed, sealed end to end for each other owner), masking its bundle into fixed
// point in Z/2⁶⁴, and the unmasking, where it reveals only what SecAgg+ allows.
//
// The coordinator is not trusted after the owner approved (issue #37): the threshold, the fewest owners and the
// participants are the ones approved, persisted here and used by every check; round members must be approved
// participants with owner certificates (never the coordinator's own), optionally pinned; the agent signs one unmasking
// request per job, and once the job is over its private keys, seed and received shares are deleted.
//
// Its state is <work dir>/<job>/secure/<coordinator>.json (0600), keyed by the coordinator's certificate: a restarted
// agent keeps its keys (its masks depend on them) and keeps refusing what it refused before; the masked bundle lies in
// masked-<key set>/, so a re-created job never reuses it.
import { createHash, randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { z } from 'zod';

import type { FederationClient } from '../../client/index.js';
import { ErrorCode, failpoint, faultInjected, fileError, GramfuseError } from '../../shared/index.js';
import type { FileLedger } from '../../shared/audit/index.js';
import { BundleManifest } from '../../shared/merge/index.js';
import {
  agreedSecret,
  ApprovedTerms,
  boundLog2Of,
  checkConfirmations,
  checkRoundScale,
  checkUnmaskRequest,
  distinctNames,
  type FixedPointScale,
  generateAgreementKeys,
  keySetOf,
  maskSlice,
  openShare,
  parseSecure,
  type RoundView,
  sealShare,
  seedCommitment,
  ShareGuard,
  SharePayload,
  signAdvertisement,
  signedRoundScale,
  signUnmaskRequest,
  splitSecret,
  survivorsNeeded,
  verifyAdvertisement,
  verifyPeerCertificate,
} from '../../shared/secure-aggregation/index.js';
import { canonicalJson, certificateFingerprints, readPrivateFile, writePrivateFile } from '../../shared/security/index.js';

const SLICE = 1 << 20;
/** How long a secure call keeps retrying an unreachable coordinator (beyond the client's retries): a restart's worth. */
const RESTART_SECONDS = 120;

const KeyPair = z.object({ publicKeyPem: z.string(), privateKeyPem: z.string() }).strict();
const Request = z.object({ survivors: z.array(z.string()), dropped: z.array(z.string()) }).strict();

/** <job dir>/secure/<coordinator>.json: the owner's terms, secrets and commitments for this job at this coordinator. */
const SecureState = z
  .object({
    /** sha256 fingerprint of the coordinator's TLS certificate this state belongs to. */
    coordinator: z.string(),
    /** What the owner approved: every check uses these, never a later reply. */
    approved: ApprovedTerms,
    /** The private keys and the self-mask seed: deleted when the job ends (`erased`). */
    secrets: z.object({ mask: KeyPair, encryption: KeyPair, selfSeed: z.string() }).strict().optional(),
    /** What this owner advertised (public: kept for audit after the secrets go). */
    advertisement: z.object({ maskPublicKey: z.string(), encryptionPublicKey: z.string(), selfSeedCommitment: z.string() }).strict(),
    advertised: z.boolean(),
    /** This owner's declared bounds (what the round's scale must cover). */
    bounds: z.record(z.string(), z.number()).optional(),
    /** SHA-256 of the round's key set (members, their keys and certificates), once seen: it may never change. */
    keySet: z.string().optional(),
    /** The sharers (U₂) this owner masked with: every unmasking request must name exactly them. */
    sharers: z.array(z.string()).optional(),
    guard: z.record(z.string(), z.enum(['self-mask', 'mask-key'])),
    received: z.record(z.string(), SharePayload),
    /** Sharers whose sealed share to this owner did not open, and why (dropped from what it can reveal). */
    unopened: z.record(z.string(), z.string()),
    /** The one unmasking request this owner signed for this job. */
    signed: Request.optional(),
    /** When the secrets were deleted (the job ended). */
    erased: z.string().optional(),
  })
  .strict();
type SecureState = z.infer<typeof SecureState>;

export interface SecureProgress {
  readonly phase: RoundView['phase'] | 'masking' | 'revealed' | 'erased';
  readonly message: string;
}

export interface SecureSessionOptions {
  readonly client: FederationClient;
  readonly jobId: string;
  readonly owner: string;
  readonly jobDir: string;
  readonly ledger: FileLedger;
  /**
   * The job's terms as the owner approved them (threshold, minOwners, participants). Persisted on first use: a later run
   * whose job reports other terms is refused, and every check of the rounds uses these.
   */
  readonly approved: ApprovedTerms;
  /** The job's state when this run began: a done or failed job's secrets are deleted at open. */
  readonly jobState?: string;
  /** The owner's pins (policy securePeers): owner → sha256:<certificate or public-key fingerprint>. */
  readonly pins?: Readonly<Record<string, string>>;
  /** The fewest fraction bits any statistic may keep (policy minFractionBits). @default 20 */
  readonly minFractionBits?: number;
  /** The federation CA (to check the certificates relayed with the other owners' keys) and the owner's certificate key. */
  readonly tls: { readonly caPem: string; readonly keyPem: string } | undefined;
  /** How long to wait for the other owners in each round before giving up. @default 3600 */
  readonly waitSeconds?: number;
  readonly pollMs?: number;
  readonly onProgress?: (progress: SecureProgress) => void;
}

/** The fraction bits a statistic must keep unless the owner's policy says otherwise. */
export const DEFAULT_MIN_FRACTION_BITS = 20;

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

const sameTerms = (a: ApprovedTerms, b: ApprovedTerms): boolean =>
  a.threshold === b.threshold &&
  a.minOwners === b.minOwners &&
  [...a.participants].sort().join('\n') === [...b.participants].sort().join('\n');

/**
 * Before anything is collected or sent for a job, the terms this run got from the coordinator are held against what the
 * owner approved for the job before, by job alone (whatever certificate the coordinator presents now): the
 * `plan.approved` ledger records' secure-aggregation terms and every secure state file under <job dir>/secure/. A job
 * approved with secure aggregation never goes plaintext (a rerun told `privacy: {}` would upload raw statistics), and
 * its terms never change (a new server certificate would otherwise start fresh state with new terms).
 * SECURE_AGGREGATION otherwise; POLICY_VIOLATION for a plaintext job when the owner's policy requires secure aggregation.
 */
export async function checkApprovedBefore(
  jobId: string,
  jobDir: string,
  ledgerTerms: readonly unknown[],
  terms: ApprovedTerms | undefined,
  requireSecure = false,
): Promise<void> {
  const dir = join(jobDir, 'secure');
  const files = await readdir(dir).then(
    (names) => names.filter((n) => n.endsWith('.json')),
    (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      throw fileError(error, dir, 'reading the secure aggregation state');
    },
  );
  const before: { from: string; terms: ApprovedTerms }[] = [];
  for (const t of ledgerTerms) {
    const parsed = ApprovedTerms.safeParse(t);
    if (!parsed.success)
      throw new GramfuseError(
        ErrorCode.SecureAggregation,
        `job ${jobId}: this owner's ledger records secure-aggregation terms it cannot read (${schemaProblemsOf(parsed.error)}); nothing was sent`,
        { facts: { job: jobId } },
      );
    before.push({ from: 'the plan.approved ledger record', terms: parsed.data });
  }
  for (const name of files ?? []) {
    const path = join(dir, name);
    const state = parseSecure(SecureState, await readPrivateFile(path, 'secure aggregation state'), path);
    before.push({ from: path, terms: state.approved });
  }
  if (terms === undefined) {
    if (before.length > 0 || files !== undefined)
      throw new GramfuseError(
        ErrorCode.SecureAggregation,
        `job ${jobId}: the coordinator now reports this job without secure aggregation, but this owner approved it with secure aggregation (${before[0]?.from ?? dir}); plaintext statistics are never sent for it: nothing was sent`,
        { facts: { job: jobId } },
      );
    if (requireSecure)
      throw new GramfuseError(
        ErrorCode.PolicyViolation,
        `rule require-secure-aggregation: job ${jobId} does not use secure aggregation, and this owner's policy (requireSecureAggregation) allows only masked uploads; nothing was computed or sent`,
        { facts: { job: jobId, rule: 'require-secure-aggregation' } },
      );
    return;
  }
  const other = before.find((b) => !sameTerms(b.terms, terms));
  if (other !== undefined)
    throw new GramfuseError(
      ErrorCode.SecureAggregation,
      `job ${jobId}: the coordinator now reports other secure-aggregation terms (threshold ${terms.threshold}, minOwners ${terms.minOwners}, participants ${terms.participants.join(', ')}) than this owner approved (threshold ${other.terms.threshold}, minOwners ${other.terms.minOwners}, participants ${other.terms.participants.join(', ')}); nothing was sent (the approval is in ${other.from})`,
      { facts: { job: jobId } },
    );
}

const schemaProblemsOf = (error: z.ZodError): string => error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');

const requestKey = (r: { readonly survivors: readonly string[]; readonly dropped: readonly string[] }): string =>
  canonicalJson({ survivors: [...r.survivors].sort(), dropped: [...r.dropped].sort() });

function freshSecrets(job: string, owner: string): Pick<SecureState, 'secrets' | 'advertisement'> {
  const mask = generateAgreementKeys();
  const encryption = generateAgreementKeys();
  const seed = randomBytes(32);
  return {
    secrets: { mask, encryption, selfSeed: seed.toString('base64') },
    advertisement: {
      maskPublicKey: mask.publicKeyPem,
      encryptionPublicKey: encryption.publicKeyPem,
      selfSeedCommitment: seedCommitment(job, owner, seed),
    },
  };
}

export class SecureSession {
  /** The round's owners' certificates, checked in round 0 (by `prepare`). */
  private readonly certificates = new Map<string, string>();
  /** The round's advertisements as checked in round 0, by owner: the only keys ever used (a later reply's are not). */
  private readonly advertisements = new Map<string, RoundView['advertisements'][number]>();

  private constructor(
    private readonly options: SecureSessionOptions,
    private state: SecureState,
    private readonly path: string,
  ) {}

  /**
   * Opens (or makes, 0600) the owner's state for this job at this coordinator. SECURE_AGGREGATION without mTLS, or when
   * the job now reports other terms than the owner approved.
   */
  static async open(options: SecureSessionOptions): Promise<SecureSession> {
    const { jobId, owner, client } = options;
    if (options.tls === undefined)
      throw new GramfuseError(
        ErrorCode.SecureAggregation,
        `job ${jobId} uses secure aggregation, which needs mTLS (--tls-ca, --tls-cert, --tls-key): the owner's keys are signed with its certificate`,
      );
    const server = client.serverCertificate();
    if (server === undefined)
      throw new GramfuseError(
        ErrorCode.SecureAggregation,
        `job ${jobId}: the coordinator's TLS certificate is unknown; no secure round was started`,
      );
    const coordinator = certificateFingerprints(server).certificate;
    // The approved terms are the job's, whatever certificate the coordinator presents: every state file must agree.
    await checkApprovedBefore(jobId, options.jobDir, [], options.approved);
    const dir = join(options.jobDir, 'secure');
    const path = join(dir, `${createHash('sha256').update(coordinator).digest('hex').slice(0, 16)}.json`);
    const exists = await stat(path).then(
      () => true,
      () => false,
    );
    let state: SecureState;
    if (exists) {
      state = parseSecure(SecureState, await readPrivateFile(path, 'secure aggregation state'), path);
      if (!sameTerms(state.approved, options.approved))
        throw new GramfuseError(
          ErrorCode.SecureAggregation,
          `job ${jobId}: the coordinator now reports other secure-aggregation terms (threshold ${options.approved.threshold}, minOwners ${options.approved.minOwners}, participants ${options.approved.participants.join(', ')}) than this owner approved (threshold ${state.approved.threshold}, minOwners ${state.approved.minOwners}, participants ${state.approved.participants.join(', ')}); nothing was sent`,
          { facts: { job: jobId } },
        );
    } else {
      state = {
        coordinator,
        approved: options.approved,
        ...freshSecrets(jobId, owner),
        advertised: false,
        guard: {},
        received: {},
        unopened: {},
      };
      await mkdir(dir, { recursive: true });
      await writePrivateFile(path, JSON.stringify(state), 'writing the secure aggregation state');
    }
    const session = new SecureSession(options, state, path);
    if (options.jobState === 'done' || options.jobState === 'failed') await session.erase(options.jobState);
    return session;
  }

  private async save(): Promise<void> {
    await writePrivateFile(this.path, JSON.stringify(this.state), 'writing the secure aggregation state');
  }

  private say(phase: SecureProgress['phase'], message: string): void {
    this.options.onProgress?.({ phase, message });
  }

  private refuse(message: string, facts: Record<string, string | number> = {}): never {
    const { jobId } = this.options;
    throw new GramfuseError(ErrorCode.SecureAggregation, `job ${jobId}: ${message}`, { facts: { job: jobId, ...facts } });
  }

  /** The secrets, or JOB_CLOSED when they were deleted (the job ended). */
  private secrets(): NonNullable<SecureState['secrets']> {
    if (this.state.secrets === undefined)
      throw new GramfuseError(
        ErrorCode.JobClosed,
        `job ${this.options.jobId}: this owner's secure-aggregation secrets were deleted when the job ended (${this.state.erased ?? 'ledger secure.erased'}); it takes part in no more rounds`,
        { facts: { job: this.options.jobId } },
      );
    return this.state.secrets;
  }

  /**
   * One call to the coordinator, retried past the client's own retries while it is unreachable (a restart), for at most
   * `RESTART_SECONDS`: every secure call is idempotent on the coordinator (a repeated answer gets the saved reply).
   */
  private async patient<T>(work: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + RESTART_SECONDS * 1000;
    for (;;) {
      try {
        return await work();
      } catch (error) {
        const code = (error as GramfuseError).code;
        if ((code !== ErrorCode.Unavailable && code !== ErrorCode.DeadlineExceeded) || Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }

  private call(...args: Parameters<FederationClient['secure']>): Promise<RoundView> {
    return this.patient(() => this.options.client.secure(...args));
  }

  /** Polls the round until `ready` holds (the other owners answer at their own pace). */
  private async until(what: string, ready: (round: RoundView) => boolean): Promise<RoundView> {
    const { client, jobId } = this.options;
    const deadline = Date.now() + (this.options.waitSeconds ?? 3600) * 1000;
    let said = '';
    for (;;) {
      const round = await this.call('round', jobId);
      if (ready(round)) return round;
      const status = await this.patient(() => client.getJob(jobId));
      if (status.state === 'failed' || status.state === 'done') {
        await this.erase(status.state);
        throw new GramfuseError(
          status.state === 'failed' ? ErrorCode.JobClosed : ErrorCode.SecureAggregation,
          `job ${jobId} is ${status.state} while this owner waited for ${what}${status.failureCode === '' ? '' : ` (${status.failureCode}: ${status.failureMessage})`}`,
          { facts: { job: jobId } },
        );
      }
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
   * Refuses a reply whose advertisements are not the key set this owner checked in round 0 (another key, owner, repeat
   * or certificate): SECURE_AGGREGATION, nothing more sent.
   */
  private sameKeySet(round: RoundView, keySet: string | undefined): void {
    if (keySet === undefined || keySetOf(round.advertisements) !== keySet || round.advertisements.length !== this.advertisements.size)
      this.refuse(
        'the coordinator now relays other keys than the key set this owner checked and shared with (a swapped key, owner or certificate); nothing more is sent',
      );
  }

  /**
   * Rounds 0 and 1, then masking: returns the masked bundle to upload. Every member of the round is checked (an
   * approved participant, an owner certificate of the federation CA that is not the coordinator's, pinned where the
   * owner pinned it), the threshold and the fewest owners are the approved ones, the scales keep the owner's fraction
   * bits; otherwise SECURE_AGGREGATION with nothing sent.
   */
  async prepare(
    manifest: BundleManifest,
    statisticsPath: string,
    ranges: ReadonlyMap<string, { begin: number; end: number }>,
  ): Promise<MaskedBundle> {
    const { client, jobId, owner } = this.options;
    const tls = this.options.tls!;
    const terms = this.state.approved;
    const bundle = await open(statisticsPath, 'r').catch((error: unknown) => {
      throw fileError(error, statisticsPath, 'reading the statistics bundle');
    });
    try {
      // Round 0: keys, the seed's commitment and bounds (only the power of two of each statistic's largest |value|).
      let round = await this.call('round', jobId);
      if (!round.done.advertised) {
        if (this.state.advertised) {
          // The coordinator has no advertisement of this owner although it made one: the job was re-created (or the
          // coordinator lies). Keys that masked an upload are never used again; keys that did not are replaced.
          if (this.state.sharers !== undefined)
            this.refuse(
              `the coordinator has no keys of ${owner}, though this owner masked and uploaded under keys it advertised for this job before (re-created job?); keys and masks are never reused: create the job under a new id`,
            );
          this.state = { ...this.state, ...freshSecrets(jobId, owner), advertised: false, received: {}, unopened: {} };
          delete this.state.keySet;
          await this.save();
        }
        if (round.phase !== 'advertising')
          this.refuse(`its key round closed before ${owner} advertised (phase ${round.phase}); this owner is not in the secure sum`);
        const bounds: Record<string, number> = {};
        for (const s of manifest.plan.statistics) bounds[s.id] = await this.bound(bundle, s, ranges);
        const ad = signAdvertisement({ job: jobId, owner, ...this.state.advertisement, bounds }, tls.keyPem);
        this.state.bounds = bounds;
        this.state.advertised = true;
        await this.save();
        round = await this.call('advertise', jobId, {
          maskPublicKey: ad.maskPublicKey,
          encryptionPublicKey: ad.encryptionPublicKey,
          selfSeedCommitment: ad.selfSeedCommitment,
          signature: ad.signature,
          bounds,
        });
        this.say('advertising', `advertised keys and ${Object.keys(bounds).length} bounds`);
      }
      round = await this.until('the other owners’ keys', (r) => r.phase !== 'advertising');
      // Distinct names only: a repeated owner would be dealt one share per position (t shares to one colluder).
      const members = distinctNames(
        jobId,
        round.advertisements.map((a) => a.owner),
        'advertisements',
      );
      if (!members.includes(owner)) this.refuse(`${owner} is not among the owners of the key round`);
      // Every relayed key is checked: the certificate (the CA, the owner role, an approved participant, not the
      // coordinator's, the pin), then the signature over the keys and the seed commitment.
      const rules = { participants: terms.participants, serverCertificatePem: client.serverCertificate(), pins: this.options.pins ?? {} };
      for (const a of round.advertisements) {
        verifyPeerCertificate(a.certificatePem, tls.caPem, a.owner, rules);
        verifyAdvertisement({ job: jobId, ...a }, a.certificatePem);
        this.certificates.set(a.owner, a.certificatePem);
        this.advertisements.set(a.owner, a);
      }
      const mine = round.advertisements.find((a) => a.owner === owner)!;
      const own = this.state.advertisement;
      if (
        mine.maskPublicKey !== own.maskPublicKey ||
        mine.encryptionPublicKey !== own.encryptionPublicKey ||
        mine.selfSeedCommitment !== own.selfSeedCommitment ||
        canonicalJson(mine.bounds) !== canonicalJson(this.state.bounds ?? {})
      )
        this.refuse(`the coordinator relays other keys for ${owner} than it advertised`);
      const keySet = keySetOf(round.advertisements);
      if (this.state.keySet !== undefined && this.state.keySet !== keySet)
        this.refuse(`the coordinator presents another key set for this job than the one this owner shared with; nothing more is sent`);
      // The threshold is the one the owner approved, a majority of the round, and the round has at least the owners the
      // sum needs: with fewer, a few owners (or one, at t = 1) could rebuild another's mask key from the shares it sent.
      // It is also a majority of the approved participants, whatever subset of them the round holds.
      const threshold = terms.threshold;
      if (
        round.threshold !== threshold ||
        threshold <= members.length / 2 ||
        threshold <= terms.participants.length / 2 ||
        threshold > members.length ||
        members.length < survivorsNeeded(terms)
      )
        this.refuse(
          `the round's threshold ${round.threshold} is not the job's ${threshold} or not a majority of its ${members.length} owners (at least ${survivorsNeeded(terms)} needed); no share was sent`,
          { threshold: round.threshold },
        );
      // The scales: computed here from the signed bounds (the relayed one must equal it), this owner's bounds covered,
      // and enough fraction bits left for every statistic.
      const scales = checkRoundScale(
        jobId,
        signedRoundScale(jobId, round.scale, [...this.advertisements.values()]),
        members.length,
        this.state.bounds ?? {},
        this.options.minFractionBits ?? DEFAULT_MIN_FRACTION_BITS,
      );
      if (this.state.keySet === undefined) {
        this.state.keySet = keySet;
        await this.save();
      }
      // Round 1: t-of-n shares of the mask key and the self-mask seed, each sealed for its recipient.
      if (!round.done.shared) {
        if (round.phase !== 'sharing') this.refuse(`the share round closed before ${owner} shared; it is not in the secure sum`);
        const secrets = this.secrets();
        const keyShares = splitSecret(Buffer.from(secrets.mask.privateKeyPem, 'utf8'), members.length, threshold);
        const seedShares = splitSecret(Buffer.from(secrets.selfSeed, 'base64'), members.length, threshold);
        const shares = round.advertisements.map((a, i) => {
          const secret = agreedSecret(secrets.encryption.privateKeyPem, a.encryptionPublicKey, jobId, 'share-encryption');
          const seedShare = Buffer.from(seedShares[i]!.y);
          // Fault injection (tests): a malicious owner deals a wrong seed share to the first other owner; the commitment
          // and the cross-check must keep it out of the sum.
          if (a.owner !== owner && a.owner === members.find((m) => m !== owner) && faultInjected('secure.poison-seed-share'))
            for (let b = 0; b < seedShare.byteLength; b++) seedShare[b] = seedShare[b]! ^ 0x5a;
          const payload: SharePayload = {
            x: keyShares[i]!.x,
            maskKey: Buffer.from(keyShares[i]!.y).toString('base64'),
            selfSeed: seedShare.toString('base64'),
          };
          const sealed = sealShare(secret, Buffer.from(JSON.stringify(payload)), shareAad(jobId, owner, a.owner));
          return { to: a.owner, sealed: Buffer.from(sealed).toString('base64') };
        });
        await this.call('share', jobId, { shares });
        this.say('sharing', `sent ${shares.length} sealed shares (threshold ${threshold})`);
      }
      failpoint('secure.shared'); // fault tests: an owner gone after key setup, before its upload
      round = await this.until('the other owners’ shares', (r) => r.phase !== 'advertising' && r.phase !== 'sharing');
      // Every later reply must carry the very key set checked in round 0; its keys are never read again (the checked ones are).
      this.sameKeySet(round, keySet);
      const sharers = distinctNames(jobId, round.sharers ?? [], 'sharers');
      distinctNames(
        jobId,
        (round.inbox ?? []).map((i) => i.from),
        'inbox',
      );
      if (!sharers.includes(owner)) this.refuse(`${owner} is not among the owners whose shares went out`);
      const outside = sharers.filter((o) => !members.includes(o));
      if (outside.length > 0) this.refuse(`${outside.join(', ')} shared but did not advertise keys in this round`);
      if (sharers.length < survivorsNeeded(terms))
        this.refuse(
          `only ${sharers.length} owners shared, fewer than the ${survivorsNeeded(terms)} the owner approved; nothing was masked`,
        );
      if (
        this.state.sharers !== undefined &&
        requestKey({ survivors: this.state.sharers, dropped: [] }) !== requestKey({ survivors: sharers, dropped: [] })
      )
        this.refuse(
          `the coordinator now names other sharers (${sharers.join(', ')}) than the ones this owner masked with (${this.state.sharers.join(', ')})`,
        );
      const ads = this.advertisements;
      const myX = members.indexOf(owner) + 1;
      for (const { from, sealed } of round.inbox ?? []) {
        if (!sharers.includes(from) || Object.hasOwn(this.state.received, from) || Object.hasOwn(this.state.unopened, from)) continue;
        // A share that does not open or is not for this owner's x drops that sharer's share here (its secrets can still be
        // rebuilt from the others'), not the round.
        try {
          const secret = agreedSecret(
            this.secrets().encryption.privateKeyPem,
            ads.get(from)!.encryptionPublicKey,
            jobId,
            'share-encryption',
          );
          const opened = openShare(secret, Buffer.from(sealed, 'base64'), shareAad(jobId, from, owner));
          const payload = parseSecure(SharePayload, Buffer.from(opened).toString('utf8'), `the share from ${from}`);
          if (payload.x !== myX)
            throw new GramfuseError(ErrorCode.SecureAggregation, `it is dealt at x = ${payload.x}, not this owner's ${myX}`);
          this.state.received[from] = payload;
        } catch (error) {
          if ((error as GramfuseError).code === ErrorCode.JobClosed) throw error;
          this.state.unopened[from] = (error as Error).message;
          this.say('uploading', `the share from ${from} is dropped: ${(error as Error).message}`);
        }
      }
      const missing = sharers.filter((o) => !Object.hasOwn(this.state.received, o) && !Object.hasOwn(this.state.unopened, o));
      if (missing.length > 0) this.refuse(`no share arrived from ${missing.join(', ')}, though they are in the round`);
      this.state.sharers = [...sharers].sort();
      await this.save();
      // Masking: fixed point with the common scale, the self mask, and the pairwise masks with every other sharer.
      const secrets = this.secrets();
      const pairSeeds = new Map(
        sharers
          .filter((o) => o !== owner)
          .map((o) => [o, agreedSecret(secrets.mask.privateKeyPem, ads.get(o)!.maskPublicKey, jobId, 'mask')] as const),
      );
      const coarsest = [...scales.entries()].reduce((a, b) => (b[1].resolution > a[1].resolution ? b : a));
      this.say(
        'masking',
        `masking ${manifest.plan.statistics.length} statistics for ${sharers.length} owners in fixed point (coarsest: ${coarsest[0]}, ±2^${coarsest[1].boundLog2} with ${coarsest[1].fractionBits} fraction bits, resolution ${coarsest[1].resolution.toExponential(1)} per entry of the sum)`,
      );
      const maskStarted = performance.now();
      const masked = await this.mask(bundle, manifest, ranges, scales, pairSeeds, keySet);
      const masking = {
        entries: masked.reused ? 0 : masked.manifest.plan.totals.bytes / 8,
        seconds: masked.reused ? 0 : (performance.now() - maskStarted) / 1000,
      };
      await this.options.ledger.append('secure.masked', jobId, {
        scaleOwners: round.scale!.owners,
        sharers,
        threshold,
        keySet,
        ...(Object.keys(this.state.unopened).length === 0 ? {} : { unopenedSharesFrom: Object.keys(this.state.unopened).sort() }),
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
    keySet: string,
  ): Promise<Omit<MaskedBundle, 'scales' | 'masking'> & { reused: boolean }> {
    const { jobId, owner } = this.options;
    // One folder per key set: a bundle masked for another round (a re-created job) is never taken for this one's.
    const dir = join(this.options.jobDir, `masked-${keySet.slice(0, 16)}`);
    const statisticsPath = join(dir, 'statistics.bin');
    const manifestPath = join(dir, 'manifest.json');
    const sourcePath = join(dir, 'source.sha256');
    // What the masked bundle was made from: the scales, the sharers and the plaintext statistics' digests. Masks are
    // deterministic (keys, seeds, scales), so a masked bundle written before a restart from the same source is the same
    // one. From another source (a re-collected bundle) it is neither reused (a stale upload) nor masked again: the same
    // masks over two plaintexts would give the coordinator their difference.
    const digests = manifest.plan.statistics.map((s) => s.sha256);
    const source = digests.every((d) => d !== undefined)
      ? createHash('sha256')
          .update(
            canonicalJson({
              scales: Object.fromEntries(scales),
              sharers: [...pairSeeds.keys()].sort(),
              plaintext: manifest.plan.statistics.map((s) => ({ id: s.id, sha256: s.sha256, bytes: s.bytes })),
            }),
          )
          .digest('hex')
      : undefined;
    const madeFrom = await readFile(sourcePath, 'utf8').catch(() => undefined);
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
    if (existing?.success === true) {
      if (source !== undefined && madeFrom === source)
        return { manifest: existing.data, statisticsPath, ranges: rangesOf(existing.data), reused: true };
      this.refuse(
        `this owner already masked another plaintext bundle (or at another scale) for this job under these keys (${dir}); masking a second one with the same masks would reveal their difference to the coordinator, and the old one is not this bundle: nothing was masked or sent (run the job again under a new id)`,
      );
    }
    await mkdir(dir, { recursive: true });
    // The source marker goes first: a bundle half-rewritten from a new source is never taken for the old one.
    await rm(sourcePath, { force: true });
    await rm(manifestPath, { force: true });
    const tmp = `${statisticsPath}.tmp-${process.pid}`;
    const out = await open(tmp, 'w', 0o600);
    const selfSeed = new Uint8Array(Buffer.from(this.secrets().selfSeed, 'base64'));
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
    if (source !== undefined) await writePrivateFile(sourcePath, source, 'writing the masked bundle’s source digest');
    return { manifest: masked, statisticsPath, ranges: rangesOf(masked), reused: false };
  }

  /**
   * Unmasking: waits for the coordinator's request, checks it against what this owner knows itself (the approved t and
   * fewest owners, the sharers it masked with, that it survived, never both kinds of share of one owner) and signs it —
   * one request per job, recorded before the signature leaves. Before revealing, at least t survivors (approved t) must
   * have signed that very request. Returns false when the sum needed nothing more from this owner.
   */
  async reveal(): Promise<boolean> {
    const { jobId, owner } = this.options;
    const tls = this.options.tls!;
    const terms = this.state.approved;
    const sharers = this.state.sharers;
    if (sharers === undefined || this.certificates.size === 0)
      throw new GramfuseError(
        ErrorCode.Internal,
        `job ${jobId}: the unmasking needs the masked round's sharers and certificates; prepare() runs first`,
      );
    const check = (round: RoundView, request: { survivors: string[]; dropped: string[] }, guard: ShareGuard): void => {
      this.sameKeySet(round, this.state.keySet);
      if (requestKey({ survivors: round.sharers ?? [], dropped: [] }) !== requestKey({ survivors: sharers, dropped: [] }))
        this.refuse(
          `the unmasking request is refused: the round now names other sharers (${(round.sharers ?? []).join(', ')}) than the ones this owner masked with (${sharers.join(', ')}); nothing was revealed`,
        );
      checkUnmaskRequest(jobId, request, { sharers, self: owner, terms }, guard);
      if (round.threshold !== terms.threshold)
        this.refuse(
          `the unmasking request is refused: the round now says threshold ${round.threshold}, but this owner approved ${terms.threshold}; nothing was revealed`,
          { threshold: round.threshold },
        );
      if (this.state.signed !== undefined && requestKey(this.state.signed) !== requestKey(request))
        this.refuse(
          `the unmasking request is refused: this owner already signed another one for this job (survivors ${this.state.signed.survivors.join(', ')}; dropped ${this.state.signed.dropped.join(', ') || 'none'}) and signs one per job; nothing was revealed`,
        );
    };
    let round = await this.until(
      'the unmasking request',
      (r) => r.phase === 'confirming' || r.phase === 'unmasking' || r.phase === 'summed',
    );
    if (round.phase === 'summed' || round.done.revealed || round.unmask === undefined) return false;
    // The consistency round: this owner signs the request it was shown (after checking it, recording only the signature).
    if (round.phase === 'confirming' && !round.done.confirmed) {
      check(round, round.unmask, new ShareGuard(jobId, this.state.guard));
      if (this.state.signed === undefined) {
        this.state.signed = { survivors: [...round.unmask.survivors].sort(), dropped: [...round.unmask.dropped].sort() };
        await this.save();
      }
      // The key set this owner masked with is signed too: t confirmations attest one transcript (keys, bounds, scale).
      await this.call('confirm', jobId, {
        signature: signUnmaskRequest(jobId, { ...round.unmask, keySet: this.state.keySet }, tls.keyPem),
      });
      failpoint('secure.confirmed'); // fault tests: an owner gone right after it signed the unmasking request
      this.say(
        'confirming',
        `signed the unmasking request (${round.unmask.survivors.length} survivors, ${round.unmask.dropped.length} dropped)`,
      );
    }
    round = await this.until('the other survivors’ confirmations', (r) => r.phase === 'unmasking' || r.phase === 'summed');
    if (round.phase === 'summed' || round.done.revealed || round.unmask === undefined) return false;
    if (this.state.signed === undefined || requestKey(round.unmask) !== requestKey(this.state.signed))
      this.refuse('the coordinator changed the unmasking request after this owner signed it (or never let it sign); nothing was revealed');
    const { survivors, dropped } = round.unmask;
    // At least t (approved) survivors signed this very request, each with the certificate checked in round 0 (prepare).
    checkConfirmations(
      jobId,
      { ...round.unmask, keySet: this.state.keySet },
      round.confirmations ?? [],
      this.certificates,
      terms.threshold,
    );
    const guard = new ShareGuard(jobId, this.state.guard);
    check(round, round.unmask, guard);
    this.state.guard = guard.toJSON();
    await this.save();
    const asked = [...survivors.map((o) => [o, 'self-mask'] as const), ...dropped.map((o) => [o, 'mask-key'] as const)];
    const unopened = asked.filter(([o]) => !Object.hasOwn(this.state.received, o)).map(([o]) => o);
    const missing = unopened.filter((o) => !Object.hasOwn(this.state.unopened, o));
    if (missing.length > 0) this.refuse(`this owner holds no share of ${missing.join(', ')}; nothing was revealed`);
    const shares = asked
      .filter(([o]) => Object.hasOwn(this.state.received, o))
      .map(([o, kind]) => {
        const held = this.state.received[o]!;
        return { owner: o, kind, x: held.x, y: kind === 'self-mask' ? held.selfSeed : held.maskKey };
      });
    await this.call('reveal', jobId, { shares, ...(unopened.length === 0 ? {} : { unopened }) });
    await this.options.ledger.append('secure.revealed', jobId, {
      selfMaskSharesOf: survivors,
      maskKeySharesOf: dropped,
      ...(unopened.length === 0 ? {} : { heldNoShareOf: unopened }),
    });
    this.say(
      'revealed',
      `revealed self-mask shares of ${survivors.length} survivors and mask-key shares of ${dropped.length} dropped owners`,
    );
    return true;
  }

  /**
   * Waits until the sum is unmasked or the job ended, then deletes this owner's secrets for the job (erase). Best
   * effort: the owner's part is done, so an unreachable coordinator (retried for at most `seconds`) leaves the secrets
   * to the next run, which deletes them once it sees the job over. Returns whether they were deleted.
   */
  async settle(seconds = Math.min(this.options.waitSeconds ?? 3600, 600)): Promise<boolean> {
    const { client, jobId } = this.options;
    const deadline = Date.now() + seconds * 1000;
    for (;;) {
      try {
        const status = await client.getJob(jobId);
        if (status.state === 'done' || status.state === 'failed') return await this.erase(status.state);
        const round = await client.secure('round', jobId);
        if (round.phase === 'summed') return await this.erase('summed');
      } catch (error) {
        const code = (error as GramfuseError).code;
        if (code !== ErrorCode.Unavailable && code !== ErrorCode.DeadlineExceeded) throw error;
      }
      if (Date.now() > deadline) {
        this.say('erased', `the job has not ended within ${seconds} s: this owner's secrets stay until a later run sees it end`);
        return false;
      }
      await new Promise((resolve) => setTimeout(resolve, this.options.pollMs ?? 200));
    }
  }

  /**
   * Deletes what only an ongoing job needs — the private keys, the self-mask seed, the shares received from the other
   * owners and the masked bundle — keeping what audit needs (the approved terms, the public keys and commitment, the key
   * set, the sharers, the signed request, what was revealed), and records it in the ledger (secure.erased).
   */
  async erase(reason: string): Promise<boolean> {
    if (this.state.secrets === undefined && Object.keys(this.state.received).length === 0) return false;
    const received = Object.keys(this.state.received).sort();
    const maskedDir = this.state.keySet === undefined ? undefined : join(this.options.jobDir, `masked-${this.state.keySet.slice(0, 16)}`);
    delete this.state.secrets;
    this.state.received = {};
    this.state.erased = `${new Date().toISOString()} (${reason})`;
    await this.save();
    if (maskedDir !== undefined) await rm(maskedDir, { recursive: true, force: true });
    await this.options.ledger.append('secure.erased', this.options.jobId, {
      reason,
      deleted: [
        'mask private key',
        'share-encryption private key',
        'self-mask seed',
        ...(maskedDir === undefined ? [] : ['masked bundle']),
      ],
      receivedSharesOf: received,
      kept: [
        'approved terms',
        'advertised public keys and seed commitment',
        'key set digest',
        'sharers',
        'signed unmasking request',
        'revealed share kinds',
      ],
    });
    this.say('erased', `deleted this owner's private keys, self-mask seed and ${received.length} received shares (${reason})`);
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
