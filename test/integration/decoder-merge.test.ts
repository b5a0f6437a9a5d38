// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
// Decoder LLM graphs (tiny real Llama and Qwen2 exports): RegMean merged locally, from agent bundles (what agents
// upload) and as a federated job (real gRPC, mTLS, agents with a memory budget of several passes) gives the same
// bytes, and every merged linear layer matches RegMean computed independently in float64 from the activations the
// models produce (test/helpers/regmean-reference.ts: dumped with withExtraOutputs, not through gramfuse's Gram graph).
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runAgent } from '../../agent/index.js';
import { certsFlags } from '../../cli/index.js';
import { connectFederation } from '../../client/index.js';
import { packageVersion } from '../../shared/index.js';
import { readHfCheckpoint } from '../../shared/merge/index.js';
import { SMALL_JOB_OWNER_POLICY } from '../helpers/agent-options.js';
import { runCli } from '../helpers/cli.js';
import { fixture, fixtureModel, jsonlRows, relativeFrobenius, TOKENIZER } from '../helpers/fixtures.js';
import { mergedWeights, referenceRegMean } from '../helpers/regmean-reference.js';
import { type MtlsCoordinator, startMtlsCoordinator } from '../helpers/mtls-coordinator.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-decoder-'));
const owners = ['org0', 'org1'];
let federation: MtlsCoordinator;
const tlsOf = (name: string) => federation.tlsOf(name);
const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

beforeAll(async () => {
  federation = await startMtlsCoordinator('decoder CA', owners, { stateDir: join(work, 'state') });
});
afterAll(async () => {
  await federation?.server.close();
  rmSync(work, { recursive: true, force: true });
});

/** The same merge as a federated job: the same settings as the CLI's defaults, each agent in several passes. */
async function federated(arch: string, models: readonly string[]): Promise<{ onnx: Buffer; safetensors: Buffer }> {
  const job = `decoder-${arch}`;
  const creator = connectFederation({ address: federation.address, tls: tlsOf('creator') });
  try {
    await creator.createJob(
      JSON.stringify({ id: job, participants: owners, merge: { method: 'regmean', alpha: ALPHA }, policy: { minRowsPerGroup: 16 } }),
      readFileSync(models[0]!),
    );
    const results = await Promise.all(
      owners.map((org, i) =>
        runAgent({
          connect: { address: federation.address, tls: tlsOf(org) },
          jobId: job,
          workDir: join(work, `agent-${arch}-${org}`),
          yes: true,
          model: models[i]!,
          data: data[i]!.path,
          tokenizer: TOKENIZER,
          dtype: 'float64',
          maxLength: MAX_LENGTH,
          batchSize: 32,
          seed: 1,
          textField: 'text',
          device: 'cpu',
          memoryBudget: 400_000,
          toolVersion: packageVersion(),
          ownerPolicy: SMALL_JOB_OWNER_POLICY,
        }),
      ),
    );
    for (const r of results) expect(r.memory?.passes).toBeGreaterThan(1);
    const final = await creator.watch(job, () => undefined);
    expect(final.state).toBe('done');
    return { onnx: await creator.download(job, 'merged.onnx'), safetensors: await creator.download(job, 'merged.safetensors') };
  } finally {
    creator.close();
  }
}

const ALPHA = 0.9;
const MAX_LENGTH = 32;
// Each owner's data: 40 real rows of its own org (all of them used: no subset, so the reference sees the same rows).
const data = owners.map((org) => {
  const path = join(work, `${org}.jsonl`);
  const rows = jsonlRows(fixture('scenarios', 'label-skew', `${org}.jsonl`), 40);
  writeFileSync(path, rows.map((r) => JSON.stringify(r)).join('\n'));
  return { path, texts: rows.map((r) => r.text) };
});

describe.each(['llama', 'qwen2'] as const)('RegMean on a decoder: %s', (arch) => {
  const models = [fixtureModel('tiny', `${arch}-a`), fixtureModel('tiny', `${arch}-b`)];
  const common = ['--tokenizer', TOKENIZER, '--max-length', String(MAX_LENGTH), '--alpha', String(ALPHA)];

  it(
    'local, bundle and federated merges are byte-identical; each layer matches float64 RegMean from dumped activations',
    { timeout: 300_000 },
    async () => {
      const local = join(work, `${arch}-local.onnx`);
      const args = ['merge', '--out', local, ...common];
      models.forEach((m, i) => args.push('--model', m, '--data', data[i]!.path));
      const merged = await runCli(args);
      expect(merged.code, merged.stderr).toBe(0);

      const bundles: string[] = [];
      for (const [i, m] of models.entries()) {
        const out = join(work, `${arch}-bundle-${i}`);
        // Two passes over the data (a budget below the whole model's accumulators): the agent's LLM-scale path.
        const r = await runCli([
          'agent',
          'collect',
          '--model',
          m,
          '--data',
          data[i]!.path,
          '--out',
          out,
          '--dtype',
          'float64',
          '--min-rows',
          '1',
          '--memory-budget',
          '400kB',
          '--json',
          ...common,
        ]);
        expect(r.code, r.stderr).toBe(0);
        expect(JSON.parse(r.stdout).passes).toBeGreaterThan(1);
        bundles.push(out);
      }
      const fromBundles = join(work, `${arch}-bundles.onnx`);
      const b = await runCli([
        'merge',
        '--template',
        models[0]!,
        ...bundles.flatMap((d) => ['--bundle', d]),
        '--out',
        fromBundles,
        '--alpha',
        String(ALPHA),
      ]);
      expect(b.code, b.stderr).toBe(0);
      expect(readFileSync(fromBundles).equals(readFileSync(local))).toBe(true);
      expect(
        readFileSync(fromBundles.replace(/\.onnx$/, '.safetensors')).equals(readFileSync(local.replace(/\.onnx$/, '.safetensors'))),
      ).toBe(true);

      const job = await federated(arch, models);
      expect(sha(job.onnx)).toBe(sha(readFileSync(local)));
      expect(sha(job.safetensors)).toBe(sha(readFileSync(local.replace(/\.onnx$/, '.safetensors'))));

      // `job download --hf-out`: the same merged model, handed back as a transformers checkpoint (names from the
      // export's structure: the model's Linear weights as [out, in], the wrapper's `m.` removed).
      const certDir = join(work, `certs-${arch}`);
      mkdirSync(certDir);
      writeFileSync(join(certDir, 'ca.pem'), federation.ca.certPem);
      writeFileSync(join(certDir, 'creator.pem'), federation.cert('creator').certPem);
      writeFileSync(join(certDir, 'creator-key.pem'), federation.cert('creator').keyPem, { mode: 0o600 });
      const downloadDir = join(work, `download-${arch}`);
      mkdirSync(downloadDir);
      const d = await runCli([
        'job',
        'download',
        `decoder-${arch}`,
        '--coordinator',
        federation.address,
        ...certsFlags(certDir, 'creator'),
        '--out',
        join(downloadDir, 'merged.onnx'),
        '--hf-out',
        join(downloadDir, 'hf'),
        '--tokenizer',
        TOKENIZER,
      ]);
      expect(d.code, d.stderr).toBe(0);
      expect(sha(readFileSync(join(downloadDir, 'merged.onnx')))).toBe(sha(readFileSync(local)));
      const hf = await readHfCheckpoint(join(downloadDir, 'hf'));
      expect(hf.tensors.get('model.layers.0.self_attn.k_proj.weight')?.shape).toEqual([32, 64]);
      expect(hf.tensors.get('score.weight')?.shape).toEqual([14, 64]);
      expect(hf.tensors.size).toBe(2 * 9 + (arch === 'qwen2' ? 2 * 3 : 0) + 3);
      expect(readFileSync(join(downloadDir, 'hf', 'README.md'), 'utf8')).toContain(`Job \`decoder-${arch}\``);

      // The independent computation (test/helpers/regmean-reference.ts): dumped activations, float64 Grams, closed form.
      const expected = await referenceRegMean(
        models.map((model, i) => ({ model, texts: data[i]!.texts })),
        { tokenizer: TOKENIZER, maxLength: MAX_LENGTH, alpha: ALPHA },
      );
      const actual = await mergedWeights(local, expected.keys());
      let worst = 0;
      for (const [name, solution] of expected) worst = Math.max(worst, relativeFrobenius(actual.get(name)!, solution));
      // Tolerance: the collected Grams are float32 sums from onnxruntime, the reference's are float64; the merged
      // weights are stored as float32 (≈ 6e-8 relative). The bound (#15): 1e-6 relative per layer.
      expect(worst).toBeLessThanOrEqual(1e-6);
      console.log(`${arch}: worst relative Frobenius error of a merged layer vs float64 RegMean = ${worst.toExponential(2)}`);
    },
  );
});
