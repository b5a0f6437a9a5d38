// Local mode, a merge from bundles and a federated job run the one merge pipeline: from the same owners'
// statistics they write byte-identical merged.onnx and merged.safetensors (issue #13), for RegMean and for
// every baseline each mode offers (federated jobs: regmean and average; bundles: not TIES, which needs a
// second round with each owner; local mode: all four).
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { collectBundle, runAgent } from '../../agent/index.js';
import { connectFederation } from '../../client/index.js';
import { runLocalMerge } from '../../cli/index.js';
import { packageVersion } from '../../shared/index.js';
import { DisclosurePolicy, type MergeMethod, MergeSpec, parseSafetensors } from '../../shared/merge/index.js';
import { listParameters, loadModel, tensorBytes } from '../../shared/onnx/index.js';
import { exampleAgent } from '../helpers/agent-options.js';
import { EXAMPLE_DATA, exampleModel, EXAMPLE_TOKENIZER, EXAMPLES } from '../helpers/examples.js';
import { type MtlsCoordinator, startMtlsCoordinator } from '../helpers/mtls-coordinator.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-one-pipeline-'));
const orgs = ['org0', 'org1', 'org2'];
const SETTINGS = { maxExamples: 48, maxLength: 64, batchSize: 16, seed: 3, textField: 'text' } as const;
let federation: MtlsCoordinator;
const tlsOf = (name: string) => federation.tlsOf(name);
const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

beforeAll(async () => {
  federation = await startMtlsCoordinator('one-pipeline CA', orgs, { stateDir: join(work, 'state'), templateDirs: [EXAMPLES] });
});
afterAll(async () => {
  await federation?.server.close();
  rmSync(work, { recursive: true, force: true });
});

interface Outputs {
  readonly onnx: Buffer;
  readonly safetensors: Buffer;
}

async function local(method: MergeMethod): Promise<Outputs> {
  const out = join(work, `local-${method}`, 'merged.onnx');
  mkdirSync(join(out, '..'), { recursive: true });
  await runLocalMerge({
    models: orgs.map(exampleModel),
    data: method === 'regmean' ? orgs.map(EXAMPLE_DATA) : [],
    tokenizer: EXAMPLE_TOKENIZER,
    spec: MergeSpec.parse({ method }),
    out,
    ...(method === 'ties' || method === 'task-arithmetic' ? { base: join(EXAMPLES, 'base', 'model.onnx') } : {}),
    ...SETTINGS,
  });
  return { onnx: readFileSync(out), safetensors: readFileSync(join(out, '..', 'merged.safetensors')) };
}

async function fromBundles(method: MergeMethod): Promise<Outputs> {
  const dir = join(work, `bundles-${method}`);
  mkdirSync(dir, { recursive: true });
  const bundles: string[] = [];
  for (const org of orgs) {
    const out = join(dir, org);
    await collectBundle({
      model: exampleModel(org),
      data: EXAMPLE_DATA(org),
      tokenizer: EXAMPLE_TOKENIZER,
      out,
      owner: org,
      spec: MergeSpec.parse({ method }),
      policy: DisclosurePolicy.parse({ minRowsPerGroup: 16 }),
      dtype: 'float64',
      device: 'cpu',
      toolVersion: packageVersion(),
      ...SETTINGS,
    });
    bundles.push(out);
  }
  const out = join(dir, 'merged.onnx');
  await runLocalMerge({
    models: [],
    data: [],
    bundles,
    template: exampleModel('org0'),
    spec: MergeSpec.parse({ method }),
    out,
    ...(method === 'task-arithmetic' ? { base: join(EXAMPLES, 'base', 'model.onnx') } : {}),
  });
  return { onnx: readFileSync(out), safetensors: readFileSync(join(dir, 'merged.safetensors')) };
}

async function federated(method: MergeMethod): Promise<Outputs> {
  const job = `pipeline-${method}`;
  const creator = connectFederation({ address: federation.address, tls: tlsOf('creator') });
  try {
    await creator.createJob(
      JSON.stringify({ id: job, participants: orgs, merge: { method }, policy: { minRowsPerGroup: 16 } }),
      readFileSync(exampleModel('org0')),
    );
    await Promise.all(
      orgs.map((org) =>
        runAgent(exampleAgent(org, { address: federation.address, tls: tlsOf(org) }, job, join(work, `agent-${method}-${org}`), SETTINGS)),
      ),
    );
    const final = await creator.watch(job, () => undefined);
    expect(final.state).toBe('done');
    return { onnx: await creator.download(job, 'merged.onnx'), safetensors: await creator.download(job, 'merged.safetensors') };
  } finally {
    creator.close();
  }
}

function expectIdentical(a: Outputs, b: Outputs, what: string): void {
  expect(sha(b.onnx), `${what}: merged.onnx`).toBe(sha(a.onnx));
  expect(sha(b.safetensors), `${what}: merged.safetensors`).toBe(sha(a.safetensors));
}

/** The merged parameters' dtypes as written: the template's (float32 for the examples), never widened. */
function dtypes(outputs: Outputs): Set<string> {
  return new Set([...parseSafetensors(outputs.safetensors, (reason) => new Error(reason)).tensors.values()].map((t) => t.dtype));
}

describe('one merge pipeline for local mode, bundles and federation', () => {
  for (const method of ['regmean', 'average'] as const) {
    it(`${method}: local, bundles and federated outputs are byte-identical`, { timeout: 300_000 }, async () => {
      const a = await local(method);
      expect(dtypes(a)).toEqual(new Set(['F32']));
      expectIdentical(a, await fromBundles(method), `${method} from bundles vs local`);
      expectIdentical(a, await federated(method), `${method} federated vs local`);
    });
  }

  it('task arithmetic: local and bundles outputs are byte-identical', { timeout: 300_000 }, async () => {
    const a = await local('task-arithmetic');
    expectIdentical(a, await fromBundles('task-arithmetic'), 'task arithmetic from bundles vs local');
  });

  it(
    "TIES (local only) goes through the same writer: merged.safetensors holds the ONNX model's parameter bytes",
    { timeout: 300_000 },
    async () => {
      const a = await local('ties');
      expect(dtypes(a)).toEqual(new Set(['F32']));
      const model = await loadModel(join(work, 'local-ties', 'merged.onnx'));
      const { tensors } = parseSafetensors(a.safetensors, (reason) => new Error(reason));
      const parameters = listParameters(model);
      expect(tensors.size).toBe(parameters.length);
      for (const p of parameters) {
        const tensor = model.proto.graph!.initializer.find((t) => t.name === p.name)!;
        expect(sha(tensors.get(p.name)!.bytes), p.name).toBe(sha(tensorBytes(model, tensor)));
      }
      const average = await local('average');
      expect(sha(a.safetensors)).not.toBe(sha(average.safetensors));
    },
  );

  it('a merge that fails leaves what was there before, and no scratch directory', { timeout: 120_000 }, async () => {
    const dir = join(work, 'keep');
    mkdirSync(dir, { recursive: true });
    const out = join(dir, 'merged.onnx');
    writeFileSync(out, 'an earlier merge');
    // A bundle collected for `average` (the test above) cannot enter a RegMean merge: refused before anything is written.
    await expect(
      runLocalMerge({
        models: [],
        data: [],
        bundles: [join(work, 'bundles-average', 'org0')],
        template: exampleModel('org0'),
        spec: MergeSpec.parse({}),
        out,
      }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(readFileSync(out, 'utf8')).toBe('an earlier merge');
    expect(readdirSync(dir)).toEqual(['merged.onnx']);
  });
});
