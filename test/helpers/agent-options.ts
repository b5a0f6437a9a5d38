import { collectBundle, ownerPolicy, type RunAgentOptions } from '../../agent/index.js';
import { packageVersion } from '../../shared/index.js';
import { DisclosurePolicy, MergeSpec } from '../../shared/merge/index.js';
import { EXAMPLE_DATA, exampleModel, EXAMPLE_TOKENIZER } from './examples.js';

/**
 * `runAgent` options for one of the shipped example orgs (org0–org2): the few real models the core tests
 * run on. Small jobs (64 examples) need the owner to allow Grams of 16 rows: the owner's own policy, which a
 * job can only tighten, says so here.
 */
export function exampleAgent(
  org: string,
  connect: RunAgentOptions['connect'],
  jobId: string,
  workDir: string,
  overrides: Partial<RunAgentOptions> = {},
): RunAgentOptions {
  return {
    connect,
    jobId,
    workDir,
    yes: true,
    model: exampleModel(org),
    data: EXAMPLE_DATA(org),
    tokenizer: EXAMPLE_TOKENIZER,
    dtype: 'float64',
    maxLength: 128,
    batchSize: 32,
    maxExamples: 64,
    seed: 1,
    textField: 'text',
    device: 'cpu',
    toolVersion: packageVersion(),
    ownerPolicy: SMALL_JOB_OWNER_POLICY,
    ...overrides,
  };
}

/** An owner who deliberately allows Grams of 16 rows or more (the tests' small jobs). */
export const SMALL_JOB_OWNER_POLICY = ownerPolicy({ minRowsPerGroup: 16, minRowsGiven: true });

/** The same for `gramfuse agent run`: a flag. */
export const SMALL_JOB_OWNER_FLAGS = ['--min-rows', '16'];

/**
 * A statistics bundle of example org0's model and data, collected in-process (32 examples, Grams of ≥ 16 rows
 * allowed), named as `owner`: what a test that talks to the coordinator directly joins and uploads with.
 */
export function exampleBundle(
  owner: string,
  out: string,
  overrides: Partial<Parameters<typeof collectBundle>[0]> = {},
): ReturnType<typeof collectBundle> {
  return collectBundle({
    model: exampleModel('org0'),
    data: EXAMPLE_DATA('org0'),
    tokenizer: EXAMPLE_TOKENIZER,
    out,
    owner,
    spec: MergeSpec.parse({}),
    policy: DisclosurePolicy.parse({ minRowsPerGroup: 16 }),
    dtype: 'float64',
    maxLength: 64,
    batchSize: 32,
    maxExamples: 32,
    seed: 1,
    textField: 'text',
    device: 'cpu',
    toolVersion: packageVersion(),
    ...overrides,
  });
}
