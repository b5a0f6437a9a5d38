// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
// Hugging Face directories in a federated job (issue 39 item 5): the creator's template is an HF directory
// (`gramfuse job create --template DIR`, built and sent inline), three owners run agents on HF directories — one of
// them stored in float16 — over mTLS, and the job's merged model is the local merge of the same directories.
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runAgent } from '../../agent/index.js';
import { certsFlags } from '../../cli/index.js';
import { connectFederation } from '../../client/index.js';
import { decodeFloats, packageVersion } from '../../shared/index.js';
import { locateCheckpointTensors } from '../../shared/hf/index.js';
import { SMALL_JOB_OWNER_POLICY } from '../helpers/agent-options.js';
import { runCli } from '../helpers/cli.js';
import { fixture, jsonlRows } from '../helpers/fixtures.js';
import { writeHfDirectory } from '../helpers/hf-directory.js';
import { type MtlsCoordinator, startMtlsCoordinator } from '../helpers/mtls-coordinator.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-hf-federated-'));
const owners = ['org0', 'org1', 'org2'];
let federation: MtlsCoordinator;
const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const MAX_LENGTH = 48;

beforeAll(async () => {
  federation = await startMtlsCoordinator('hf CA', owners, { stateDir: join(work, 'state') });
});
afterAll(async () => {
  await federation?.server.close();
  rmSync(work, { recursive: true, force: true });
});

describe('a federated job on Hugging Face directories', () => {
  it(
    'template from a directory, three HF owners (one float16) over mTLS: the result is the local merge',
    { timeout: 300_000 },
    async () => {
      // org2 holds llama-a's weights stored as float16 (its own copy, its own dtype).
      const f16 = join(work, 'llama-a-f16');
      const source = fixture('hf', 'tiny', 'llama-a');
      const tensors = [...(await locateCheckpointTensors(source))].map(([name, t]) => ({
        name,
        shape: t.shape,
        values: decodeFloats(new Uint8Array(readFileSync(join(source, t.file)).subarray(t.begin, t.end)), 'float32'),
      }));
      const config = JSON.parse(readFileSync(join(source, 'config.json'), 'utf8')) as Record<string, unknown>;
      writeHfDirectory(f16, { ...config, torch_dtype: 'float16' }, tensors, { dtype: 'F16' });
      copyFileSync(join(source, 'tokenizer.json'), join(f16, 'tokenizer.json'));
      const models = [source, fixture('hf', 'tiny', 'llama-b'), f16];
      const data = owners.map((org) => {
        const path = join(work, `${org}.jsonl`);
        writeFileSync(
          path,
          jsonlRows(fixture('scenarios', 'label-skew', `${org}.jsonl`), 40)
            .map((r) => JSON.stringify(r))
            .join('\n'),
        );
        return path;
      });

      const certDir = join(work, 'certs');
      mkdirSync(certDir);
      writeFileSync(join(certDir, 'ca.pem'), federation.ca.certPem);
      writeFileSync(join(certDir, 'creator.pem'), federation.cert('creator').certPem);
      writeFileSync(join(certDir, 'creator-key.pem'), federation.cert('creator').keyPem, { mode: 0o600 });
      const spec = join(work, 'spec.json');
      writeFileSync(
        spec,
        JSON.stringify({ id: 'hf-job', participants: owners, merge: { method: 'regmean', alpha: 0.9 }, policy: { minRowsPerGroup: 16 } }),
      );
      const created = await runCli([
        'job',
        'create',
        '--coordinator',
        federation.address,
        ...certsFlags(certDir, 'creator'),
        '--spec',
        spec,
        '--template',
        source,
        '--json',
      ]);
      expect(created.code, created.stderr).toBe(0);
      const inspect = await runCli(['inspect', source, '--json']);
      expect((JSON.parse(created.stdout) as { fingerprint: string }).fingerprint).toBe(
        (JSON.parse(inspect.stdout) as { fingerprint: string }).fingerprint,
      );

      const results = await Promise.all(
        owners.map((org, i) =>
          runAgent({
            connect: { address: federation.address, tls: federation.tlsOf(org) },
            jobId: 'hf-job',
            workDir: join(work, `agent-${org}`),
            yes: true,
            model: models[i]!,
            data: data[i]!,
            tokenizer: join(source, 'tokenizer.json'),
            dtype: 'float64',
            maxLength: MAX_LENGTH,
            batchSize: 32,
            seed: 1,
            textField: 'text',
            device: 'cpu',
            toolVersion: packageVersion(),
            ownerPolicy: SMALL_JOB_OWNER_POLICY,
          }),
        ),
      );
      expect(results).toHaveLength(3);
      const creator = connectFederation({ address: federation.address, tls: federation.tlsOf('creator') });
      let job: { safetensors: Buffer };
      try {
        const final = await creator.watch('hf-job', () => undefined);
        expect(final.state).toBe('done');
        job = { safetensors: await creator.download('hf-job', 'merged.safetensors') };
      } finally {
        creator.close();
      }

      mkdirSync(join(work, 'local'));
      const local = join(work, 'local', 'merged.onnx');
      const args = ['merge', '--out', local, '--max-length', String(MAX_LENGTH), '--alpha', '0.9'];
      models.forEach((m, i) => args.push('--model', m, '--data', data[i]!));
      const merged = await runCli(args);
      expect(merged.code, merged.stderr).toBe(0);
      expect(sha(job.safetensors)).toBe(sha(readFileSync(join(work, 'local', 'merged.safetensors'))));
    },
  );
});
