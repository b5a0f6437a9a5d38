import { z } from 'zod';

import { ErrorCode, GramfuseError, schemaProblems } from '../errors.js';
import { DisclosurePolicy, MergeSpec } from '../merge/index.js';

/**
 * What an identity (a certificate's common name, a participant) may look like: it becomes a file name on the
 * coordinator and the agent, so no path separators, no leading dot, bounded length.
 */
export const IDENTITY_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
export const IdentityName = z
  .string()
  .regex(IDENTITY_PATTERN, 'letters, digits, . _ @ - (at most 64, starting with a letter or digit; no path separators)');

/** True when `name` can serve as an identity (see IDENTITY_PATTERN). */
export const isValidIdentity = (name: string): boolean => IDENTITY_PATTERN.test(name);

/** The privacy block of a job spec (issue #18). */
export const PrivacySpec = z
  .object({
    secureAggregation: z
      .boolean()
      .default(false)
      .describe(
        'mask every statistic (fixed point in Z/2⁶⁴, SecAgg+ pairwise and self masks): the coordinator stores only masked vectors and their sum',
      ),
    threshold: z
      .number()
      .int()
      .min(2)
      .optional()
      .describe(
        'Shamir threshold t (n/2 < t ≤ n): owners whose shares unmask the sum; default ⌊(n + k)/2⌋ + 1 (at most n), so that 2t > n + k for k = privacy.colluders',
      ),
    colluders: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe(
        'owners that may collude with the coordinator (k, default 1): the default t has 2t > n + k; with dropout lies, k ≥ 2t − n colluders could unmask one owner (docs/SECURITY.md)',
      ),
    minOwners: z.number().int().min(3).default(3).describe('fewest owners whose statistics may enter a secure sum (≥ 3)'),
    roundTimeoutSeconds: z
      .number()
      .positive()
      .max(7 * 24 * 3600)
      .default(60)
      .describe('how long a round waits for the owners still missing once its first answer came, before they count as dropped'),
  })
  .strict();
export type PrivacySpec = z.infer<typeof PrivacySpec>;

/** Colluding owners the default threshold withstands when the spec names none. */
export const DEFAULT_COLLUDERS = 1;

/**
 * The Shamir threshold in force: the spec's, or the smallest t with 2t > n + k (k = privacy.colluders, default 1), at
 * most n: with dropout lies, k ≥ 2t − n owners colluding with the coordinator could unmask one owner (docs/SECURITY.md).
 */
export const secureThreshold = (spec: { participants: readonly string[]; privacy: PrivacySpec }): number => {
  const n = spec.participants.length;
  return spec.privacy.threshold ?? Math.min(n, Math.floor((n + (spec.privacy.colluders ?? DEFAULT_COLLUDERS)) / 2) + 1);
};

/** Secure aggregation's Shamir shares are numbered 1..255 (GF(2⁸)): a secure job has at most this many participants. */
export const MAX_SECURE_PARTICIPANTS = 255;

/** A federated merge job (issue #5). Every field has a default or says why it has none. */
/** Chunks in flight per upload stream by default, and at most (a stream holds up to this many chunks in memory). */
export const DEFAULT_UPLOAD_WINDOW = 8;
export const MAX_UPLOAD_WINDOW = 32;

export const JobSpec = z
  .object({
    id: z
      .string()
      .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'lowercase letters, digits, . _ - (at most 63)')
      .describe('job id, unique on the coordinator'),
    participants: z
      .array(IdentityName)
      .min(1)
      .max(1000)
      .describe('agent identities (certificate subject common names) that may join and upload'),
    quorum: z.number().int().positive().optional().describe('owners needed before solving; default all participants'),
    merge: MergeSpec.default(MergeSpec.parse({})).describe('method and parameters (α, weighting, padding rule)'),
    policy: DisclosurePolicy.default(DisclosurePolicy.parse({})).describe('owner-side limits every agent checks'),
    fingerprint: z
      .string()
      .regex(/^sha256:[0-9a-f]{64}$/)
      .optional()
      .describe("the template's fingerprint; checked against the uploaded template when given"),
    limits: z
      .object({
        maxJobBytes: z
          .number()
          .int()
          .positive()
          .default(8 * 1024 ** 3)
          .describe('most bytes all owners together may upload'),
        maxChunkBytes: z
          .number()
          .int()
          .positive()
          .max(4 * 1024 * 1024)
          .default(4 * 1024 * 1024)
          .describe('largest chunk accepted (grpc-js receives 4 MiB by default)'),
        uploadWindow: z
          .number()
          .int()
          .min(1)
          .max(MAX_UPLOAD_WINDOW)
          .default(DEFAULT_UPLOAD_WINDOW)
          .describe(
            'chunks an agent may have in flight unacknowledged; an interrupted upload re-sends at most this many (docs/BENCHMARKS.md measures the default)',
          ),
      })
      .strict()
      .default({ maxJobBytes: 8 * 1024 ** 3, maxChunkBytes: 4 * 1024 * 1024, uploadWindow: DEFAULT_UPLOAD_WINDOW }),
    deadlines: z
      .object({
        collect: z.iso
          .datetime({ offset: true })
          .optional()
          .describe('the quorum must have uploaded by then (ISO 8601); otherwise the job fails with DEADLINE_EXCEEDED'),
      })
      .strict()
      .default({})
      .describe("wall-clock limits of the job (per-call deadlines are the clients' own)"),
    privacy: PrivacySpec.default(PrivacySpec.parse({})).describe(
      "secure aggregation (DESIGN §8): the coordinator learns only the sums of the owners' statistics",
    ),
  })
  .strict()
  .refine((spec) => spec.quorum === undefined || spec.quorum <= spec.participants.length, {
    message: 'quorum cannot exceed the number of participants',
    path: ['quorum'],
  })
  .superRefine((spec, ctx) => {
    const p = spec.privacy;
    if (!p.secureAggregation) return;
    const n = spec.participants.length;
    const issue = (path: (string | number)[], message: string): void => ctx.addIssue({ code: 'custom', path, message });
    if (n < 3) issue(['participants'], `secure aggregation needs at least 3 participants (got ${n}): with 2, the sum reveals the other's`);
    if (n > MAX_SECURE_PARTICIPANTS)
      issue(
        ['participants'],
        `secure aggregation takes at most ${MAX_SECURE_PARTICIPANTS} participants (got ${n}): its Shamir shares are numbered 1..255; split the owners into several jobs`,
      );
    if (p.colluders !== undefined && p.threshold !== undefined && 2 * p.threshold <= n + p.colluders)
      issue(
        ['privacy', 'threshold'],
        `t = ${p.threshold} does not withstand ${p.colluders} colluding owners at n = ${n}: it needs 2t > n + k, t ≥ ${Math.floor((n + p.colluders) / 2) + 1}`,
      );
    if (p.colluders !== undefined && p.threshold === undefined && n + p.colluders >= 2 * n)
      issue(
        ['privacy', 'colluders'],
        `no threshold t ≤ ${n} withstands ${p.colluders} colluding owners at n = ${n} (2t > n + k needs k < n)`,
      );
    if (p.threshold !== undefined && (p.threshold <= n / 2 || p.threshold > n))
      issue(['privacy', 'threshold'], `the threshold t must satisfy n/2 < t ≤ n for n = ${n} participants (got ${p.threshold})`);
    if (p.minOwners > n) issue(['privacy', 'minOwners'], `minOwners ${p.minOwners} exceeds the ${n} participants`);
    if (spec.quorum !== undefined)
      issue(['quorum'], 'with secure aggregation the survivors needed are privacy.minOwners and privacy.threshold; leave quorum out');
  })
  .refine((spec) => spec.merge.method !== 'ties' && spec.merge.method !== 'task-arithmetic', {
    message:
      'federated jobs support regmean and average (task arithmetic and TIES need the base model and a second round; not federated yet)',
    path: ['merge', 'method'],
  })
  .refine((spec) => spec.merge.alphaCandidates === undefined, {
    message:
      'α chosen after upload is not federated yet: set merge.alpha, or choose α locally with `gramfuse merge --alpha auto --validation-data …`',
    path: ['merge', 'alphaCandidates'],
  });
export type JobSpec = z.infer<typeof JobSpec>;

/** Parses a job spec, reporting every problem at once with its dot path. */
export function parseJobSpec(value: unknown, source: string): JobSpec {
  const result = JobSpec.safeParse(value);
  if (result.success) return result.data;
  throw new GramfuseError(ErrorCode.InvalidArgument, `${source}: invalid job spec: ${schemaProblems(result.error.issues)}`, {
    facts: { problems: result.error.issues.length },
  });
}

/** Job states: open → collecting → solving → done | failed. */
export type JobState = 'open' | 'collecting' | 'solving' | 'done' | 'failed';
