import { z } from 'zod';

import { ErrorCode, GramfuseError } from '../errors.js';
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
  })
  .strict()
  .refine((spec) => spec.quorum === undefined || spec.quorum <= spec.participants.length, {
    message: 'quorum cannot exceed the number of participants',
    path: ['quorum'],
  })
  .refine((spec) => spec.merge.method !== 'ties' && spec.merge.method !== 'task-arithmetic', {
    message:
      'federated jobs support regmean and average (task arithmetic and TIES need the base model and a second round; not federated yet)',
    path: ['merge', 'method'],
  });
export type JobSpec = z.infer<typeof JobSpec>;

/** Parses a job spec, reporting every problem at once with its dot path. */
export function parseJobSpec(value: unknown, source: string): JobSpec {
  const result = JobSpec.safeParse(value);
  if (result.success) return result.data;
  const problems = result.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
  throw new GramfuseError(ErrorCode.InvalidArgument, `${source}: invalid job spec: ${problems.join('; ')}`, {
    facts: { problems: problems.length },
  });
}

/** Job states: open → collecting → solving → done | failed. */
export type JobState = 'open' | 'collecting' | 'solving' | 'done' | 'failed';
