import { readFile } from 'node:fs/promises';

import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

import { ErrorCode, fileError, GramfuseError, schemaProblems } from '../shared/index.js';
import { DisclosurePolicy } from '../shared/merge/index.js';

/**
 * The owner's policy file (e.g. `agent-policy.yaml` beside the agent), zod-checked. Every field is optional;
 * what it sets is combined with the owner's flags and then with each job's policy, strictest wins: a job can
 * tighten the owner's policy, never loosen it.
 */
export const OwnerPolicyFile = z
  .object({
    minRowsPerGroup: z.number().int().nonnegative().optional().describe('refuse to disclose a Gram built from fewer rows'),
    allowedLayers: z.array(z.string().min(1)).optional().describe('only these weights may have Gram statistics disclosed'),
    expectFingerprint: z
      .string()
      .regex(/^sha256:[0-9a-f]{64}$/, 'must look like sha256:<64 hex digits>')
      .optional()
      .describe('compute only for a job whose template has this fingerprint'),
    securePeers: z
      .record(
        z.string().min(1),
        z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must look like sha256:<64 hex digits> (a certificate or public-key fingerprint)'),
      )
      .optional()
      .describe(
        'secure aggregation: pin peers, owner → sha256 fingerprint of its certificate or public key; a pinned peer presented with another certificate is refused. Against a coordinator that also holds the CA key, only pinned peers protect the owner',
      ),
    minFractionBits: z
      .number()
      .int()
      .min(0)
      .max(62)
      .optional()
      .describe('secure aggregation: refuse a round whose common scale leaves any statistic fewer fraction bits (default 20)'),
    requireSecureAggregation: z
      .boolean()
      .optional()
      .describe('refuse every job that does not use secure aggregation: nothing but masked vectors ever leaves (default false)'),
  })
  .strict();
export type OwnerPolicyFile = z.infer<typeof OwnerPolicyFile>;

/** Who set a rule of the policy in force: the owner (flag or file), the job, or both to the same value. */
export type RuleSource = 'owner' | 'job' | 'owner and job' | 'default';

/** The owner's own policy: its flags and its policy file, strictest of the two. */
export interface OwnerPolicy {
  readonly minRowsPerGroup: number;
  readonly allowedLayers?: readonly string[];
  readonly expectFingerprint?: string;
  /** Secure aggregation: pinned peers (owner → sha256 fingerprint of its certificate or public key). */
  readonly securePeers?: Readonly<Record<string, string>>;
  /** Secure aggregation: the fewest fraction bits a statistic may keep. @default 20 */
  readonly minFractionBits?: number;
  /** Refuse every job without secure aggregation (policy requireSecureAggregation). @default false */
  readonly requireSecureAggregation?: boolean;
  /** Where each rule came from (a flag, the file, or the default). */
  readonly origin: { readonly minRowsPerGroup: string; readonly allowedLayers?: string; readonly expectFingerprint?: string };
}

/** The policy an agent applies to one job, and where each of its rules came from (shown in the plan). */
export interface EffectivePolicy {
  readonly policy: DisclosurePolicy;
  readonly sources: { readonly minRowsPerGroup: RuleSource; readonly allowedLayers: RuleSource; readonly fingerprint: RuleSource };
}

const intersect = (a: readonly string[] | undefined, b: readonly string[] | undefined): string[] | undefined =>
  a === undefined ? (b === undefined ? undefined : [...b]) : b === undefined ? [...a] : a.filter((x) => b.includes(x));

/** Reads a policy file (YAML or JSON); every problem is reported with its dot path. */
export async function readOwnerPolicyFile(path: string): Promise<OwnerPolicyFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw fileError(error, path, 'reading the owner policy');
  }
  let value: unknown;
  try {
    value = /\.json$/i.test(path) ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    throw new GramfuseError(ErrorCode.InvalidArgument, `${path}: not valid YAML or JSON (${(error as Error).message.split('\n')[0]})`, {
      facts: { path },
    });
  }
  const parsed = OwnerPolicyFile.safeParse(value ?? {});
  if (!parsed.success) {
    throw new GramfuseError(ErrorCode.InvalidArgument, `${path}: ${schemaProblems(parsed.error.issues)}`, { facts: { path } });
  }
  return parsed.data;
}

/** The owner's flags and policy file combined, strictest wins. */
export function ownerPolicy(
  flags: { minRowsPerGroup: number; minRowsGiven: boolean; allowedLayers?: readonly string[]; expectFingerprint?: string },
  file?: { path: string; policy: OwnerPolicyFile },
): OwnerPolicy {
  const f = file?.policy;
  const fromFile = file === undefined ? '' : `policy file ${file.path}`;
  const minRowsFromFile = f?.minRowsPerGroup !== undefined && f.minRowsPerGroup > flags.minRowsPerGroup;
  if (f?.expectFingerprint !== undefined && flags.expectFingerprint !== undefined && f.expectFingerprint !== flags.expectFingerprint) {
    throw new GramfuseError(
      ErrorCode.PolicyViolation,
      `rule expect-fingerprint: --expect-fingerprint ${flags.expectFingerprint} and ${fromFile}'s ${f.expectFingerprint} disagree; no job can satisfy both`,
      { facts: { rule: 'expect-fingerprint' } },
    );
  }
  const allowedLayers = intersect(flags.allowedLayers, f?.allowedLayers);
  const expectFingerprint = flags.expectFingerprint ?? f?.expectFingerprint;
  return {
    minRowsPerGroup: Math.max(flags.minRowsPerGroup, f?.minRowsPerGroup ?? 0),
    ...(allowedLayers === undefined ? {} : { allowedLayers }),
    ...(expectFingerprint === undefined ? {} : { expectFingerprint }),
    ...(f?.securePeers === undefined ? {} : { securePeers: f.securePeers }),
    ...(f?.minFractionBits === undefined ? {} : { minFractionBits: f.minFractionBits }),
    ...(f?.requireSecureAggregation === undefined ? {} : { requireSecureAggregation: f.requireSecureAggregation }),
    origin: {
      minRowsPerGroup: minRowsFromFile ? fromFile : flags.minRowsGiven ? '--min-rows' : 'default',
      ...(allowedLayers === undefined
        ? {}
        : {
            allowedLayers: [flags.allowedLayers === undefined ? '' : '--allow-layers', f?.allowedLayers === undefined ? '' : fromFile]
              .filter((x) => x !== '')
              .join(' and '),
          }),
      ...(expectFingerprint === undefined
        ? {}
        : { expectFingerprint: flags.expectFingerprint !== undefined ? '--expect-fingerprint' : fromFile }),
    },
  };
}

/** The owner's policy on its own (agent plan / collect, no job). */
export function ownerOnly(owner: OwnerPolicy): EffectivePolicy {
  return {
    policy: DisclosurePolicy.parse({
      minRowsPerGroup: owner.minRowsPerGroup,
      ...(owner.allowedLayers === undefined ? {} : { allowedLayers: [...owner.allowedLayers] }),
    }),
    sources: {
      minRowsPerGroup: owner.origin.minRowsPerGroup === 'default' ? 'default' : 'owner',
      allowedLayers: owner.allowedLayers === undefined ? 'default' : 'owner',
      fingerprint: owner.expectFingerprint === undefined ? 'default' : 'owner',
    },
  };
}

/**
 * The owner's policy and a job's, strictest wins: the larger row minimum, the intersection of allowed
 * layers. A job whose template the owner's policy excludes (its fingerprint) is POLICY_VIOLATION here,
 * before anything is computed; a job that needs statistics of layers the owner forbids is refused by the
 * plan check (POLICY_VIOLATION) the same way.
 */
export function combinePolicies(owner: OwnerPolicy, job: DisclosurePolicy, jobFingerprint: string): EffectivePolicy {
  if (owner.expectFingerprint !== undefined && owner.expectFingerprint !== jobFingerprint) {
    throw new GramfuseError(
      ErrorCode.PolicyViolation,
      `rule expect-fingerprint (owner, ${owner.origin.expectFingerprint}): the job's template has fingerprint ${jobFingerprint}, the owner allows only ${owner.expectFingerprint}; nothing was computed or sent`,
      { facts: { rule: 'expect-fingerprint', found: jobFingerprint, expected: owner.expectFingerprint } },
    );
  }
  const allowedLayers = intersect(owner.allowedLayers, job.allowedLayers);
  const source = (ownerValue: unknown, jobValue: unknown, ownerWins: boolean, ownerSet: boolean): RuleSource =>
    JSON.stringify(ownerValue) === JSON.stringify(jobValue) && ownerSet
      ? 'owner and job'
      : ownerWins
        ? ownerSet
          ? 'owner'
          : 'default'
        : 'job';
  const ownerRowsSet = owner.origin.minRowsPerGroup !== 'default';
  return {
    policy: DisclosurePolicy.parse({
      minRowsPerGroup: Math.max(owner.minRowsPerGroup, job.minRowsPerGroup),
      ...(allowedLayers === undefined ? {} : { allowedLayers }),
    }),
    sources: {
      minRowsPerGroup: source(owner.minRowsPerGroup, job.minRowsPerGroup, owner.minRowsPerGroup >= job.minRowsPerGroup, ownerRowsSet),
      allowedLayers:
        allowedLayers === undefined
          ? 'default'
          : owner.allowedLayers === undefined
            ? 'job'
            : job.allowedLayers === undefined
              ? 'owner'
              : 'owner and job',
      fingerprint: owner.expectFingerprint === undefined ? 'job' : 'owner and job',
    },
  };
}

/** One line for the plan: which rule came from whom. */
export function formatPolicySources(effective: EffectivePolicy): string {
  const s = effective.sources;
  return `policy sources: min rows ${effective.policy.minRowsPerGroup} (${s.minRowsPerGroup}); allowed layers (${s.allowedLayers}); model fingerprint (${s.fingerprint})`;
}
