// The SecAgg+ rounds of a secure job (issue #18), as both sides read them: the JSON bodies of the SecureAggregation
// RPCs (validated with zod at each end), the per-statistic fixed-point scales, the masking of one owner's statistic
// and the unmasking of their sum, a slice at a time. Owners are ordered by name: owner i adds PRG(sᵢⱼ) for every
// peer j after it and subtracts it for every peer before it, so the pairwise masks cancel in the sum.
import { createHash, X509Certificate } from 'node:crypto';

import { z } from 'zod';

import { ErrorCode, GramfuseError, schemaProblems } from '../errors.js';
import { IdentityName } from '../federation/job-spec.js';
import { canonicalJson, certificateFingerprints, certificateRole, certificateServesTls } from '../security/index.js';
import { decodeFixedPoint, encodeFixedPoint, type FixedPointScale, fixedPointScale } from './fixed-point.js';
import { ShareGuard } from './guard.js';
import { type UnmaskRequest, verifyUnmaskRequest } from './keys.js';
import { applyMask } from './prg.js';

/** A log₂ bound an owner may declare: the smallest below which every fraction bit is still useful (2⁻⁶⁴), and 2¹⁰²³. */
const BoundLog2 = z.number().int().min(-1074).max(1023);
const Base64 = (max: number) =>
  z
    .string()
    .max(max)
    .regex(/^[A-Za-z0-9+/]*={0,2}$/, 'base64');
const Pem = z.string().min(1).max(8192);
const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'a SHA-256 in hex');

/** Round 0: the owner's two X25519 public keys, signed with its certificate key, and a log₂ bound per statistic. */
export const AdvertiseBody = z
  .object({
    maskPublicKey: Pem,
    encryptionPublicKey: Pem,
    selfSeedCommitment: Sha256Hex,
    signature: Base64(2048),
    bounds: z.record(z.string().min(1).max(1024), BoundLog2).describe('statistic id → b with max |value| ≤ 2^b'),
  })
  .strict();
export type AdvertiseBody = z.infer<typeof AdvertiseBody>;

/** Round 1: one sealed share pair (mask key, self-mask seed) for each owner of the round, the sender included. */
export const ShareBody = z.object({ shares: z.array(z.object({ to: IdentityName, sealed: Base64(16_384) }).strict()).max(1000) }).strict();
export type ShareBody = z.infer<typeof ShareBody>;

/** What a sealed share holds (opened by its recipient only). */
export const SharePayload = z.object({ x: z.number().int().min(1).max(255), maskKey: Base64(4096), selfSeed: Base64(256) }).strict();
export type SharePayload = z.infer<typeof SharePayload>;

export const ShareKindSchema = z.enum(['self-mask', 'mask-key']);

/** Unmasking: the caller's shares of the owners the coordinator named (self-mask seeds of survivors, mask keys of the dropped). */
export const RevealBody = z
  .object({
    shares: z
      .array(z.object({ owner: IdentityName, kind: ShareKindSchema, x: z.number().int().min(1).max(255), y: Base64(4096) }).strict())
      .max(2000),
    /** Owners asked for whose share the caller holds none: theirs did not open (garbage from them or the relay). */
    unopened: z.array(IdentityName).max(1000).optional(),
  })
  .strict();
export type RevealBody = z.infer<typeof RevealBody>;

/** The consistency round: the caller's signature over the unmasking request it was shown. */
export const ConfirmBody = z.object({ signature: Base64(2048) }).strict();
export type ConfirmBody = z.infer<typeof ConfirmBody>;

export const SecurePhase = z.enum(['advertising', 'sharing', 'uploading', 'confirming', 'unmasking', 'summed']);
export type SecurePhase = z.infer<typeof SecurePhase>;

/** The round as one owner sees it (the Round RPC's reply). */
export const RoundView = z
  .object({
    job: z.string(),
    phase: SecurePhase,
    threshold: z.number().int(),
    minOwners: z.number().int(),
    /** Owners whose keys were taken into the round (U₁), with their certificates: from phase `sharing` on. */
    advertisements: z.array(
      z
        .object({
          owner: IdentityName,
          maskPublicKey: Pem,
          encryptionPublicKey: Pem,
          selfSeedCommitment: Sha256Hex,
          signature: Base64(2048),
          certificatePem: Pem,
          /** The owner's declared bounds, as it signed them: every agent computes the common scale from these. */
          bounds: z.record(z.string().min(1).max(1024), BoundLog2),
        })
        .strict(),
    ),
    /** The common scale: owners |U₁| and, per statistic, the largest declared bound: from phase `sharing` on. */
    scale: z
      .object({ owners: z.number().int(), bounds: z.record(z.string(), BoundLog2) })
      .strict()
      .optional(),
    /** Owners whose shares went out (U₂): every mask is between them. From phase `uploading` on. */
    sharers: z.array(IdentityName).optional(),
    /** The sealed shares addressed to the caller, from each sharer. From phase `uploading` on. */
    inbox: z.array(z.object({ from: IdentityName, sealed: Base64(16_384) }).strict()).optional(),
    /** Whose self-mask seeds (survivors) and mask keys (dropped) the coordinator asks for. From phase `confirming` on. */
    unmask: z
      .object({ survivors: z.array(IdentityName), dropped: z.array(IdentityName) })
      .strict()
      .optional(),
    /** The survivors' signatures over the unmasking request they were shown (the consistency round). From `unmasking` on. */
    confirmations: z.array(z.object({ owner: IdentityName, signature: Base64(2048) }).strict()).optional(),
    /** Whether the caller has advertised, shared, confirmed and revealed. */
    done: z.object({ advertised: z.boolean(), shared: z.boolean(), confirmed: z.boolean(), revealed: z.boolean() }).strict(),
  })
  .strict();
export type RoundView = z.infer<typeof RoundView>;

/** Parses a body or a round with zod; INVALID_ARGUMENT naming every field that is wrong (at most 5), by dot path. */
export function parseSecure<T>(schema: z.ZodType<T>, json: string, what: string): T {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (error) {
    throw new GramfuseError(ErrorCode.InvalidArgument, `${what}: not valid JSON (${(error as Error).message})`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new GramfuseError(ErrorCode.InvalidArgument, `${what}: ${schemaProblems(parsed.error.issues, 5)}`);
  return parsed.data;
}

/** Below 2⁻⁶⁴ a bound only adds fraction bits no float statistic uses: bounds are floored there (all-zero statistics too). */
export const MIN_BOUND_LOG2 = -64;

/** The fixed-point scale of one statistic: the largest bound any owner of U₁ declared, for |U₁| owners. */
export function statisticScale(boundLog2: number, owners: number): FixedPointScale {
  return fixedPointScale(Math.max(MIN_BOUND_LOG2, boundLog2), owners);
}

/** +1 when `self` adds the pair's mask (its peer sorts after it), −1 when it subtracts it. */
export const pairSign = (self: string, peer: string): 1 | -1 => (self < peer ? 1 : -1);

/** The PRG label of a mask: the job, the statistic and whose mask it is, so no key stream is used for two things. */
export const maskLabel = (job: string, statistic: string, kind: 'self' | 'pair'): string => `${job}\u0000${statistic}\u0000${kind}`;

/**
 * What the owner approved of a secure job (persisted with its secrets, so a restart cannot be talked into other terms):
 * the Shamir threshold t, the fewest owners a sum may have, and the participants by name. Every later check uses these,
 * never a figure from a later reply of the coordinator.
 */
export const ApprovedTerms = z
  .object({
    threshold: z.number().int().min(1).max(255),
    minOwners: z.number().int().min(1),
    participants: z.array(IdentityName).min(1).max(255),
  })
  .strict();
export type ApprovedTerms = z.infer<typeof ApprovedTerms>;

/** The fewest survivors an unmasking may have: max(t, minOwners), both as approved. */
export const survivorsNeeded = (terms: ApprovedTerms): number => Math.max(terms.threshold, terms.minOwners);

/**
 * The names of a list the coordinator relays (advertisements, sharers, inbox), each at most once. SECURE_AGGREGATION on a
 * repeat: a repeated owner would get one share per position, so a single colluder could hold t shares of a secret.
 */
export function distinctNames(job: string, names: readonly string[], what: string): string[] {
  const seen = new Set<string>();
  for (const name of names) {
    if (seen.has(name))
      throw new GramfuseError(
        ErrorCode.SecureAggregation,
        `job ${job}: the round is refused: ${name} appears more than once in its ${what} (one share per owner, never several); nothing was sent`,
        { facts: { job, owner: name } },
      );
    seen.add(name);
  }
  return [...seen];
}

/**
 * SHA-256 (hex) of a round's key set: each member's name, keys, seed commitment, signed bounds and certificate
 * fingerprint, sorted by owner. Fixed once the owner checked round 0: every later reply must present the same one.
 */
export function keySetOf(
  advertisements: readonly {
    readonly owner: string;
    readonly maskPublicKey: string;
    readonly encryptionPublicKey: string;
    readonly selfSeedCommitment: string;
    readonly certificatePem: string;
    readonly bounds: Readonly<Record<string, number>>;
  }[],
): string {
  return createHash('sha256')
    .update(
      canonicalJson(
        advertisements
          .map((a) => ({
            owner: a.owner,
            mask: a.maskPublicKey,
            encryption: a.encryptionPublicKey,
            seed: a.selfSeedCommitment,
            bounds: a.bounds,
            cert: certificateFingerprints(a.certificatePem).certificate,
          }))
          .sort((x, y) => (x.owner < y.owner ? -1 : x.owner > y.owner ? 1 : 0)),
      ),
    )
    .digest('hex');
}

/** How the agent tells a peer from an impostor in round 0 (besides the CA). */
export interface PeerRules {
  /** The participants the owner approved: every round member must be one. */
  readonly participants: readonly string[];
  /** The certificate the coordinator presented as a TLS server: never accepted as a peer. */
  readonly serverCertificatePem: string | undefined;
  /** The owner's pins (policy `securePeers`): owner → sha256:<certificate or public-key fingerprint>. */
  readonly pins: Readonly<Record<string, string>>;
}

/**
 * Checks a peer's certificate before its advertisement is believed: issued by the federation CA and valid now; not the
 * certificate the coordinator serves TLS with; an *owner* certificate (the gramfuse role extension `gramfuse certs`
 * writes, and no serverAuth usage), so a server, creator, solver or observer certificate cannot pose as an owner; of an
 * approved participant; and, where the owner pinned that peer, with the pinned fingerprint. SECURE_AGGREGATION otherwise:
 * the coordinator relayed a certificate that does not belong to one of the owners this owner agreed to share with.
 */
export function verifyPeerCertificate(certificatePem: string, caPem: string, owner: string, rules?: PeerRules): void {
  const refuse = (why: string): never => {
    throw new GramfuseError(ErrorCode.SecureAggregation, `the certificate relayed for ${owner} is refused: ${why}; no share was sent`, {
      facts: { owner },
    });
  };
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certificatePem);
  } catch {
    return refuse('it is not a PEM certificate');
  }
  const ca = new X509Certificate(caPem);
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) refuse('it was not issued by this federation’s CA');
  const now = Date.now();
  if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now)
    refuse(`it is not valid now (${cert.validFrom} – ${cert.validTo})`);
  if (rules === undefined) return;
  const fingerprints = certificateFingerprints(certificatePem);
  if (rules.serverCertificatePem !== undefined) {
    const server = certificateFingerprints(rules.serverCertificatePem);
    if (server.certificate === fingerprints.certificate || server.publicKey === fingerprints.publicKey)
      refuse('it is the coordinator’s own TLS server certificate (or its key): the coordinator cannot be a peer');
  }
  if (!rules.participants.includes(owner))
    refuse(`${owner} is not one of the participants this owner approved (${rules.participants.join(', ')})`);
  const role = certificateRole(certificatePem);
  if (role !== 'owner' || certificateServesTls(certificatePem))
    refuse(
      role === undefined
        ? 'it carries no gramfuse role; only owner certificates are accepted as peers (reissue it with `gramfuse certs issue --role owner`)'
        : role !== 'owner'
          ? `it is a ${role} certificate; only owner certificates are accepted as peers`
          : 'it allows TLS server authentication, which an owner certificate never does',
    );
  const pin = rules.pins[owner];
  if (pin !== undefined && pin !== fingerprints.certificate && pin !== fingerprints.publicKey)
    refuse(`it does not match the pinned fingerprint ${pin} (policy securePeers.${owner}); its certificate is ${fingerprints.certificate}`);
}

/**
 * The agent's check of an unmasking request before it signs or reveals anything (SecAgg+), with only what it knows
 * itself: the survivors and the dropped are disjoint and together exactly the sharers this owner masked with; the owner
 * itself survived (it uploaded: named dropped, its mask-key shares would unmask it); at least max(t, minOwners)
 * survived, both as the owner approved (fewer would let the coordinator peel one owner's vector out of a tiny sum);
 * and — through `guard`, persisted by the caller — never both kinds of share of one owner, in this request or across
 * requests. SECURE_AGGREGATION otherwise, with nothing revealed.
 */
export function checkUnmaskRequest(
  job: string,
  request: { readonly survivors: readonly string[]; readonly dropped: readonly string[] },
  context: { readonly sharers: readonly string[]; readonly self: string; readonly terms: ApprovedTerms },
  guard: ShareGuard,
): void {
  const refuse = (why: string, facts: Record<string, string | number> = {}): never => {
    throw new GramfuseError(ErrorCode.SecureAggregation, `job ${job}: the unmasking request is refused: ${why}; nothing was revealed`, {
      facts: { job, ...facts },
    });
  };
  const { sharers, self, terms } = context;
  const known = new Set(sharers);
  const both = request.survivors.filter((o) => request.dropped.includes(o));
  if (both.length > 0)
    refuse(`it asks for both the self-mask and the mask-key shares of ${both.join(', ')}, which would unmask their own statistics`, {
      owner: both[0]!,
    });
  const unknown = [...request.survivors, ...request.dropped].filter((o) => !known.has(o));
  if (unknown.length > 0) refuse(`${unknown.join(', ')} did not share keys in this round`);
  const named = new Set([...request.survivors, ...request.dropped]);
  const unnamed = sharers.filter((o) => !named.has(o));
  if (unnamed.length > 0 || named.size !== request.survivors.length + request.dropped.length)
    refuse(
      `its survivors and dropped owners are not exactly the ${sharers.length} owners this one masked with (${unnamed.join(', ') || 'a name repeats'})`,
    );
  if (request.dropped.includes(self))
    refuse(`it names ${self} dropped, but ${self} uploaded its masked statistics: its mask-key shares would unmask them`, { owner: self });
  const needed = survivorsNeeded(terms);
  if (new Set(request.survivors).size < needed)
    refuse(
      `only ${request.survivors.length} survivors, fewer than the ${needed} this owner approved (threshold ${terms.threshold}, minOwners ${terms.minOwners})`,
      { survivors: request.survivors.length },
    );
  // Checked on a copy first, so a refusal reveals (and records) nothing.
  const trial = new ShareGuard(job, guard.toJSON());
  for (const o of request.survivors) trial.reveal(o, 'self-mask');
  for (const o of request.dropped) trial.reveal(o, 'mask-key');
  for (const o of request.survivors) guard.reveal(o, 'self-mask');
  for (const o of request.dropped) guard.reveal(o, 'mask-key');
}

/**
 * The fixed-point scales of a round, checked before this owner masks anything: the coordinator's |U₁| is the number of
 * advertisements it relayed, every bound this owner declared is covered, and no statistic keeps fewer than
 * `minFractionBits` fraction bits (one owner declaring a huge bound would otherwise drown everyone's statistics in
 * rounding: the sum would be wrong without anyone noticing). SECURE_AGGREGATION otherwise, naming the statistic.
 */
export function checkRoundScale(
  job: string,
  scale: { readonly owners: number; readonly bounds: Readonly<Record<string, number>> } | undefined,
  members: number,
  ownBounds: Readonly<Record<string, number>>,
  minFractionBits: number,
): Map<string, FixedPointScale> {
  const refuse = (why: string, facts: Record<string, string | number> = {}): never => {
    throw new GramfuseError(
      ErrorCode.SecureAggregation,
      `job ${job}: the round's fixed-point scale is refused: ${why}; nothing was masked`,
      {
        facts: { job, ...facts },
      },
    );
  };
  if (scale === undefined) return refuse('the coordinator sent none');
  if (scale.owners !== members)
    refuse(
      `it is for ${scale.owners} owners, but the key round has ${members} (a sum of more owners than the scale allows could overflow)`,
    );
  const out = new Map<string, FixedPointScale>();
  for (const [id, own] of Object.entries(ownBounds)) {
    const b = scale.bounds[id];
    if (b === undefined || b < Math.max(MIN_BOUND_LOG2, own))
      refuse(`statistic ${id}'s bound 2^${b ?? '?'} is below this owner's 2^${own}`, { statistic: id });
    const s = statisticScale(b!, scale.owners);
    if (s.fractionBits < minFractionBits)
      refuse(
        `statistic ${id} would keep ${s.fractionBits} fraction bits (some owner declared |value| ≤ 2^${b}), fewer than this owner's minFractionBits ${minFractionBits}`,
        { statistic: id },
      );
    out.set(id, s);
  }
  return out;
}

/**
 * The round's common scale as every agent computes it itself from the signed bounds of the advertisements it checked:
 * |U₁| owners and, per statistic, the largest bound any of them declared. The coordinator's `round.scale` must be exactly
 * this (else SECURE_AGGREGATION, nothing masked): a scale of its own choosing, different per owner, would let it decode
 * one owner's statistic from a sum encoded at the others' scale.
 */
export function signedRoundScale(
  job: string,
  relayed: { readonly owners: number; readonly bounds: Readonly<Record<string, number>> } | undefined,
  advertisements: readonly { readonly bounds: Readonly<Record<string, number>> }[],
): { owners: number; bounds: Record<string, number> } {
  const bounds: Record<string, number> = {};
  for (const a of advertisements)
    for (const [id, b] of Object.entries(a.bounds)) bounds[id] = Object.hasOwn(bounds, id) ? Math.max(bounds[id]!, b) : b;
  const computed = { owners: advertisements.length, bounds };
  const ids = new Set([...Object.keys(bounds), ...Object.keys(relayed?.bounds ?? {})]);
  // '' when the owner count differs (or no scale came), else the first statistic whose bound differs.
  const differs =
    relayed === undefined || relayed.owners !== computed.owners
      ? ''
      : [...ids].find((id) => !Object.hasOwn(relayed.bounds, id) || !Object.hasOwn(bounds, id) || relayed.bounds[id] !== bounds[id]);
  if (differs !== undefined)
    throw new GramfuseError(
      ErrorCode.SecureAggregation,
      `job ${job}: the round's fixed-point scale is refused: it is not the one the owners' signed bounds give (${computed.owners} owners${differs !== '' ? `; statistic ${differs}: relayed 2^${relayed?.bounds[differs] ?? '?'}, signed 2^${bounds[differs] ?? '?'}` : ''}), so owners could be encoding at different scales; nothing was masked`,
      { facts: { job } },
    );
  return computed;
}

/**
 * The agent's consistency check before it reveals (SecAgg+): at least `threshold` distinct survivors signed the very
 * unmasking request this agent was shown, each with the certificate it advertised (checked against the federation CA in
 * round 0). As t > n/2, a coordinator cannot show two different requests to two groups of owners and get both
 * answered. SECURE_AGGREGATION otherwise, with nothing revealed.
 */
export function checkConfirmations(
  job: string,
  request: UnmaskRequest,
  confirmations: readonly { readonly owner: string; readonly signature: string }[],
  certificates: ReadonlyMap<string, string>,
  threshold: number,
): void {
  const valid = new Set(
    confirmations
      .filter(
        (c) =>
          request.survivors.includes(c.owner) &&
          certificates.has(c.owner) &&
          verifyUnmaskRequest(job, request, c.signature, certificates.get(c.owner)!),
      )
      .map((c) => c.owner),
  );
  if (valid.size < threshold)
    throw new GramfuseError(
      ErrorCode.SecureAggregation,
      `job ${job}: the unmasking request is refused: only ${valid.size} survivor(s) signed the request this owner was shown, fewer than the threshold ${threshold} (the coordinator may be showing owners different requests); nothing was revealed`,
      { facts: { job, signed: valid.size, threshold } },
    );
}

/**
 * One slice of an owner's masked statistic: values → fixed point (a value past the bound is SECURE_AGGREGATION,
 * nothing encoded) → + its self mask → ± the mask it shares with each peer.
 */
export function maskSlice(
  values: ArrayLike<number>,
  offset: number,
  scale: FixedPointScale,
  context: {
    readonly job: string;
    readonly statistic: string;
    readonly self: string;
    readonly selfSeed: Uint8Array;
    readonly pairSeeds: ReadonlyMap<string, Uint8Array>;
  },
): BigUint64Array {
  const vector = encodeFixedPoint(values, scale, context.statistic);
  applyMask(vector, context.selfSeed, maskLabel(context.job, context.statistic, 'self'), 1, offset);
  for (const [peer, seed] of context.pairSeeds)
    applyMask(vector, seed, maskLabel(context.job, context.statistic, 'pair'), pairSign(context.self, peer), offset);
  return vector;
}

/**
 * One slice of the unmasked sum: Σ of the survivors' masked vectors, minus each survivor's self mask, minus the
 * masks each survivor shared with a dropped owner (whose partner never sent the opposite one), then decoded.
 */
export function unmaskSlice(
  maskedSum: BigUint64Array,
  offset: number,
  scale: FixedPointScale,
  context: {
    readonly job: string;
    readonly statistic: string;
    readonly selfSeeds: readonly Uint8Array[];
    /** For each (survivor, dropped) pair: their shared seed and the survivor's sign for it. */
    readonly droppedPairs: readonly { readonly seed: Uint8Array; readonly sign: 1 | -1 }[];
  },
): Float64Array {
  for (const seed of context.selfSeeds) applyMask(maskedSum, seed, maskLabel(context.job, context.statistic, 'self'), -1, offset);
  for (const { seed, sign } of context.droppedPairs)
    applyMask(maskedSum, seed, maskLabel(context.job, context.statistic, 'pair'), sign === 1 ? -1 : 1, offset);
  return decodeFixedPoint(maskedSum, scale);
}
