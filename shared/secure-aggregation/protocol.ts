// The SecAgg+ rounds of a secure job (issue #18), as both sides read them: the JSON bodies of the SecureAggregation
// RPCs (validated with zod at each end), the per-statistic fixed-point scales, the masking of one owner's statistic
// and the unmasking of their sum, a slice at a time. Owners are ordered by name: owner i adds PRG(sᵢⱼ) for every
// peer j after it and subtracts it for every peer before it, so the pairwise masks cancel in the sum.
import { X509Certificate } from 'node:crypto';

import { z } from 'zod';

import { ErrorCode, GramfuseError, schemaProblems } from '../errors.js';
import { IdentityName } from '../federation/job-spec.js';
import { decodeFixedPoint, encodeFixedPoint, type FixedPointScale, fixedPointScale } from './fixed-point.js';
import { ShareGuard } from './guard.js';
import { verifyUnmaskRequest } from './keys.js';
import { applyMask } from './prg.js';

/** A log₂ bound an owner may declare: the smallest below which every fraction bit is still useful (2⁻⁶⁴), and 2¹⁰²³. */
const BoundLog2 = z.number().int().min(-1074).max(1023);
const Base64 = (max: number) =>
  z
    .string()
    .max(max)
    .regex(/^[A-Za-z0-9+/]*={0,2}$/, 'base64');
const Pem = z.string().min(1).max(8192);

/** Round 0: the owner's two X25519 public keys, signed with its certificate key, and a log₂ bound per statistic. */
export const AdvertiseBody = z
  .object({
    maskPublicKey: Pem,
    encryptionPublicKey: Pem,
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
          signature: Base64(2048),
          certificatePem: Pem,
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
 * Checks a peer's certificate against the federation CA (issuer, signature, validity) before its advertisement is
 * believed. SECURE_AGGREGATION otherwise: the coordinator relayed a certificate the federation did not issue.
 */
export function verifyPeerCertificate(certificatePem: string, caPem: string, owner: string): void {
  const refuse = (why: string): never => {
    throw new GramfuseError(ErrorCode.SecureAggregation, `the certificate relayed for ${owner} is refused: ${why}`, { facts: { owner } });
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
}

/**
 * The agent's check of an unmasking request before it reveals anything (SecAgg+): the survivors and the dropped are
 * disjoint sharers, at least `threshold` owners survived (fewer would let the coordinator peel one owner's vector out
 * of a tiny sum), and — through `guard`, persisted by the caller — it never reveals both kinds of share of one owner,
 * in this request or across requests. SECURE_AGGREGATION otherwise, with nothing revealed.
 */
export function checkUnmaskRequest(
  job: string,
  request: { readonly survivors: readonly string[]; readonly dropped: readonly string[] },
  sharers: readonly string[],
  threshold: number,
  guard: ShareGuard,
): void {
  const refuse = (why: string, facts: Record<string, string | number> = {}): never => {
    throw new GramfuseError(ErrorCode.SecureAggregation, `job ${job}: the unmasking request is refused: ${why}; nothing was revealed`, {
      facts: { job, ...facts },
    });
  };
  const known = new Set(sharers);
  const both = request.survivors.filter((o) => request.dropped.includes(o));
  if (both.length > 0)
    refuse(`it asks for both the self-mask and the mask-key shares of ${both.join(', ')}, which would unmask their own statistics`, {
      owner: both[0]!,
    });
  const unknown = [...request.survivors, ...request.dropped].filter((o) => !known.has(o));
  if (unknown.length > 0) refuse(`${unknown.join(', ')} did not share keys in this round`);
  if (new Set(request.survivors).size < threshold)
    refuse(`only ${request.survivors.length} survivors, fewer than the threshold ${threshold}`, { survivors: request.survivors.length });
  // Checked on a copy first, so a refusal reveals (and records) nothing.
  const trial = new ShareGuard(job, guard.toJSON());
  for (const o of request.survivors) trial.reveal(o, 'self-mask');
  for (const o of request.dropped) trial.reveal(o, 'mask-key');
  for (const o of request.survivors) guard.reveal(o, 'self-mask');
  for (const o of request.dropped) guard.reveal(o, 'mask-key');
}

/**
 * The agent's consistency check before it reveals (SecAgg+): at least `threshold` distinct survivors signed the very
 * unmasking request this agent was shown, each with the certificate it advertised (checked against the federation CA in
 * round 0). As t > n/2, a coordinator cannot show two different requests to two groups of owners and get both
 * answered. SECURE_AGGREGATION otherwise, with nothing revealed.
 */
export function checkConfirmations(
  job: string,
  request: { readonly survivors: readonly string[]; readonly dropped: readonly string[] },
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
