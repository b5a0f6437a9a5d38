import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runAgent } from '../../agent/index.js';
import { certsFlags } from '../../cli/index.js';
import { type ClientTls, connectFederation } from '../../client/index.js';
import { type CoordinatorServer, startCoordinatorServer } from '../../coordinator/index.js';
import { federation } from '../../proto/index.js';
import type { GramfuseError } from '../../shared/index.js';
import { ErrorCode, packageVersion } from '../../shared/index.js';
import { loadModel, readParameterValues } from '../../shared/onnx/index.js';
import { type CertificateBundle, createCertificateAuthority, issueCertificate } from '../../shared/security/index.js';
import { runCli } from '../helpers/cli.js';
import { EXAMPLE_DATA, exampleModel, EXAMPLE_TOKENIZER } from '../helpers/examples.js';
import { maxAbsDiff } from '../helpers/fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-federation-'));
const orgs = ['org0', 'org1', 'org2'];
const MAX = '300';
let ca: CertificateBundle;
const certs = new Map<string, CertificateBundle>();
let serverCert: CertificateBundle;
const tlsOf = (name: string): ClientTls => ({ caPem: ca.certPem, certPem: certs.get(name)!.certPem, keyPem: certs.get(name)!.keyPem });

beforeAll(async () => {
  ca = await createCertificateAuthority('test federation CA');
  serverCert = await issueCertificate(ca, 'coordinator', { hosts: ['localhost', '127.0.0.1'] });
  for (const name of ['creator', 'mallory', ...orgs]) certs.set(name, await issueCertificate(ca, name));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function startServer(state: string): Promise<CoordinatorServer> {
  return startCoordinatorServer({
    stateDir: join(work, state),
    listen: '127.0.0.1:0',
    tls: { caPem: ca.certPem, certPem: serverCert.certPem, keyPem: serverCert.keyPem },
    creators: ['creator'],
    templateDirs: [work],
  });
}

async function createJob(server: CoordinatorServer, id: string, participants = orgs): Promise<void> {
  const client = connectFederation({ address: `localhost:${server.port}`, tls: tlsOf('creator') });
  await client.createJob(JSON.stringify({ id, participants }), readFileSync(exampleModel('org0')));
  client.close();
}

const agentArgs = (org: string, port: number, job: string, workDir: string): string[] => [
  'agent',
  'run',
  '--coordinator',
  `localhost:${port}`,
  '--job',
  job,
  '--model',
  exampleModel(org),
  '--data',
  EXAMPLE_DATA(org),
  '--tokenizer',
  EXAMPLE_TOKENIZER,
  '--max-examples',
  MAX,
  '--work-dir',
  workDir,
  '--yes',
  '--json',
  '--threads',
  '1',
  ...certsFlags(work, org),
];

function agentOptions(org: string, port: number, job: string, workDir: string, chunkBytes?: number): Parameters<typeof runAgent>[0] {
  return {
    connect: { address: `localhost:${port}`, tls: tlsOf(org) },
    jobId: job,
    workDir,
    yes: true,
    model: exampleModel(org),
    data: EXAMPLE_DATA(org),
    tokenizer: EXAMPLE_TOKENIZER,
    dtype: 'float64',
    maxLength: 128,
    batchSize: 32,
    maxExamples: Number(MAX),
    seed: 1,
    textField: 'text',
    device: 'cpu',
    toolVersion: packageVersion(),
    ...(chunkBytes === undefined ? {} : { chunkBytes }),
  };
}

async function download(server: CoordinatorServer, job: string): Promise<Buffer> {
  const client = connectFederation({ address: `localhost:${server.port}`, tls: tlsOf('creator') });
  const final = await client.watch(job, () => undefined);
  expect(final.state).toBe('done');
  const bytes = await client.download(job, 'merged.onnx');
  client.close();
  return bytes;
}

describe('federation over gRPC with mTLS', () => {
  let localMerged: string;
  let federatedSha = '';

  it('coordinator + 3 agent processes give the model gramfuse merge gives (max |Δ| ≤ 1e-6)', { timeout: 300_000 }, async () => {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(work, 'ca.pem'), ca.certPem);
    for (const org of orgs) {
      writeFileSync(join(work, `${org}.pem`), certs.get(org)!.certPem);
      writeFileSync(join(work, `${org}-key.pem`), certs.get(org)!.keyPem, { mode: 0o600 });
    }
    await using server = await startServer('main');
    await createJob(server, 'fed');
    const results = await Promise.all(orgs.map((org) => runCli(agentArgs(org, server.port, 'fed', join(work, 'agents', org)))));
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(results[0]!.stdout);
    expect(summary).toMatchObject({ owner: 'org0', receipts: 64, chunksSkipped: 0 });
    // Both sides' audit ledgers verify, and the report says what left org0 and which merged model used it.
    const coordinatorLedger = join(work, 'main', 'audit.jsonl');
    for (const ledger of [summary.ledger as string, coordinatorLedger]) {
      const verified = await runCli(['audit', 'verify', '--ledger', ledger]);
      expect(verified.code, verified.stderr).toBe(0);
      expect(verified.stdout).toMatch(/chain and signatures verify/);
    }
    // Each agent's receipts match the coordinator's committed statistics byte for byte.
    for (const r of results) {
      const { ledger, owner } = JSON.parse(r.stdout) as { ledger: string; owner: string };
      const reconciled = await runCli([
        'audit',
        'reconcile',
        '--agent-ledger',
        ledger,
        '--coordinator-ledger',
        coordinatorLedger,
        '--json',
      ]);
      expect(reconciled.code, reconciled.stderr).toBe(0);
      expect(JSON.parse(reconciled.stdout)).toMatchObject({ owner, agree: true });
    }
    const merged = await download(server, 'fed');
    federatedSha = createHash('sha256').update(merged).digest('hex');
    const report = await runCli(['audit', 'report', '--ledger', coordinatorLedger, '--owner', 'org0', '--json']);
    expect(report.code, report.stderr).toBe(0);
    const owner = JSON.parse(report.stdout);
    expect(owner.jobs[0].statistics).toHaveLength(64);
    expect(owner.jobs[0].usedBy[0].mergedModelSha256).toBe(federatedSha);
    const agentReport = await runCli(['audit', 'report', '--ledger', summary.ledger, '--owner', 'org0']);
    expect(agentReport.stdout).toMatch(/What left org0, according to .* \(verified\):/);
    const federatedPath = join(work, 'federated.onnx');
    writeFileSync(federatedPath, merged);

    localMerged = join(work, 'local.onnx');
    const local = await runCli([
      'merge',
      ...orgs.flatMap((o) => ['--model', exampleModel(o), '--data', EXAMPLE_DATA(o)]),
      '--max-examples',
      MAX,
      '--tokenizer',
      EXAMPLE_TOKENIZER,
      '--out',
      localMerged,
    ]);
    expect(local.code, local.stderr).toBe(0);
    const a = await loadModel(federatedPath);
    const b = await loadModel(localMerged);
    for (const t of b.proto.graph!.initializer.filter((x) => x.dataType === 1))
      expect(maxAbsDiff(readParameterValues(a, t.name!), readParameterValues(b, t.name!))).toBeLessThanOrEqual(1e-6);
  });

  it("a coordinator restarted between two agents' uploads finishes the job with the same output", { timeout: 300_000 }, async () => {
    const first = await startServer('restart');
    await createJob(first, 'fed');
    await runAgent(agentOptions('org0', first.port, 'fed', join(work, 'restart', 'org0')));
    await first.close();
    await using second = await startServer('restart');
    for (const org of ['org1', 'org2']) await runAgent(agentOptions(org, second.port, 'fed', join(work, 'restart', org)));
    const merged = await download(second, 'fed');
    expect(createHash('sha256').update(merged).digest('hex')).toBe(federatedSha);
    // A second upload after the job is solved is refused by the coordinator, and the job stays done.
    const late = connectFederation({ address: `localhost:${second.port}`, tls: tlsOf('org1') });
    const error = await late.join({ jobId: 'fed', fingerprint: 'any', manifestJson: '{}' }).catch((e: unknown) => e as GramfuseError);
    const after = await late.getJob('fed');
    late.close();
    expect((error as GramfuseError).code).toBe(ErrorCode.JobClosed);
    expect((error as GramfuseError).message).toMatch(/job fed is done and accepts no more statistics/);
    expect(after.state).toBe('done');
  });

  it('an upload cut off mid-stream resumes and re-sends at most the chunk in flight', { timeout: 300_000 }, async () => {
    await using server = await startServer('resume');
    await createJob(server, 'fed', ['org0']);
    const chunkBytes = 32 * 1024;
    let seen = 0;
    const cut = 40;
    const error = await runAgent({
      ...agentOptions('org0', server.port, 'fed', join(work, 'resume', 'org0'), chunkBytes),
      onUpload: async () => {
        if (++seen > cut) {
          // Let the chunks already written reach the coordinator, then drop the link mid-stream.
          await new Promise((resolve) => setTimeout(resolve, 1500));
          throw new Error('link cut');
        }
      },
    }).catch((e: unknown) => e);
    // The run failed, and because of the cut (a run that succeeded would resolve to its result, not an Error).
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(/link cut/);
    const client = connectFederation({ address: `localhost:${server.port}`, tls: tlsOf('org0') });
    const state = await client.uploadState('fed');
    client.close();
    // Measured, not assumed: the chunks the coordinator holds, plus every chunk of each committed statistic.
    const manifest = JSON.parse(readFileSync(join(work, 'resume', 'org0', 'fed', 'bundle', 'manifest.json'), 'utf8')) as {
      plan: { statistics: { id: string; bytes: number }[] };
    };
    const chunksOf = new Map(manifest.plan.statistics.map((s) => [s.id, Math.max(1, Math.ceil(s.bytes / chunkBytes))]));
    const delivered = state.statistics.reduce((sum, x) => sum + (x.committed ? chunksOf.get(x.statisticId)! : x.held.length), 0);
    expect(delivered).toBeGreaterThan(0);
    expect(delivered).toBeLessThanOrEqual(cut);
    const resumed = await runAgent(agentOptions('org0', server.port, 'fed', join(work, 'resume', 'org0'), chunkBytes));
    expect(resumed.reusedBundle).toBe(true);
    // Everything before the cut is held: the resumed run sends the rest plus at most the chunk in flight.
    // Run once more after the job is solved: nothing is sent, no receipt is new, and it succeeds (idempotent).
    const again = await runAgent({ ...agentOptions('org0', server.port, 'fed', join(work, 'resume', 'org0'), chunkBytes) });
    expect(again).toMatchObject({ chunksSent: 0, receipts: 0, reusedBundle: true });
    const total = totalChunksOf(join(work, 'resume', 'org0', 'fed', 'bundle'), chunkBytes);
    expect(delivered + resumed.chunksSent).toBeLessThanOrEqual(total + 1);
    expect(delivered + resumed.chunksSent).toBeGreaterThanOrEqual(total);
  });

  it('a job whose owners miss its collection deadline fails with DEADLINE_EXCEEDED, as an event and in the ledger', async () => {
    await using server = await startServer('deadline');
    const client = connectFederation({ address: `localhost:${server.port}`, tls: tlsOf('creator') });
    const states: string[] = [];
    const stop = await server.coordinator.events.subscribe('late', (e) => {
      if (e.type === 'state') states.push(String(e.data.state));
    });
    await client.createJob(
      JSON.stringify({ id: 'late', participants: ['org0', 'org1'], deadlines: { collect: new Date(Date.now() + 1500).toISOString() } }),
      readFileSync(exampleModel('org0')),
    );
    const final = await client.watch('late', () => undefined);
    client.close();
    await stop();
    expect(final.state).toBe('failed');
    expect(final.failureCode).toBe(ErrorCode.DeadlineExceeded);
    expect(final.failureMessage).toMatch(/collection deadline .* passed with 0 of 2 owners complete \(missing: org0, org1\)/);
    expect(states).toEqual(['open', 'failed']);
    const ledger = readFileSync(join(work, 'deadline', 'audit.jsonl'), 'utf8');
    expect(ledger).toMatch(/"code":"DEADLINE_EXCEEDED".*"kind":"job.failed"/);
  });

  it("a template on the coordinator's disk with external data survives a restart", { timeout: 120_000 }, async () => {
    const { saveModel } = await import('../../shared/onnx/index.js');
    const external = join(work, 'external-template', 'model.onnx');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(work, 'external-template'));
    await saveModel(await loadModel(exampleModel('org0')), external, { externalData: 'always' });
    const first = await startServer('external');
    const client = connectFederation({ address: `localhost:${first.port}`, tls: tlsOf('creator') });
    const created = await client.createJob(JSON.stringify({ id: 'ext', participants: orgs }), { path: external });
    client.close();
    await first.close();
    rmSync(join(work, 'external-template'), { recursive: true });
    await using second = await startServer('external');
    const again = connectFederation({ address: `localhost:${second.port}`, tls: tlsOf('creator') });
    const status = await again.getJob('ext');
    again.close();
    expect(status.fingerprint).toBe(created.fingerprint);
    expect(status.state).toBe('open');
  });

  describe('rejections: status code, clear message, job state unchanged', () => {
    let server: CoordinatorServer;
    beforeAll(async () => {
      server = await startServer('reject');
      await createJob(server, 'fed', ['org0', 'org1']);
    });
    afterAll(async () => server.close());

    it('an agent not in the job', async () => {
      const client = connectFederation({ address: `localhost:${server.port}`, tls: tlsOf('mallory') });
      const error = await client.join({ jobId: 'fed', fingerprint: 'x', manifestJson: '{}' }).catch((e: unknown) => e as GramfuseError);
      client.close();
      expect((error as GramfuseError).code).toBe(ErrorCode.NotAuthorized);
      expect((error as GramfuseError).message).toMatch(/mallory is not a participant of job fed/);
    });

    it('a certificate from another CA', async () => {
      const other = await createCertificateAuthority('other CA');
      const stranger = await issueCertificate(other, 'org0');
      const client = connectFederation({
        address: `localhost:${server.port}`,
        tls: { caPem: ca.certPem, certPem: stranger.certPem, keyPem: stranger.keyPem },
        deadlineSeconds: 5,
      });
      const error = await client.getJob('fed').catch((e: unknown) => e as GramfuseError);
      client.close();
      expect((error as GramfuseError).code).toBe(ErrorCode.Unavailable);
    });

    it('an expired certificate from the right CA', async () => {
      const expired = await issueCertificate(ca, 'org0', { notBefore: new Date(Date.now() - 30 * 24 * 3600 * 1000), days: 1 });
      const client = connectFederation({
        address: `localhost:${server.port}`,
        tls: { caPem: ca.certPem, certPem: expired.certPem, keyPem: expired.keyPem },
        deadlineSeconds: 5,
      });
      const error = await client.getJob('fed').catch((e: unknown) => e as GramfuseError);
      client.close();
      // The TLS handshake refuses it: the call never reaches the coordinator's logic.
      expect((error as GramfuseError).code).toBe(ErrorCode.Unavailable);
      expect((error as GramfuseError).message).toMatch(/the coordinator at localhost:\d+ is unreachable/);
    });

    it('a plain-text client against the TLS server', async () => {
      const client = connectFederation({ address: `localhost:${server.port}`, insecureIdentity: 'org0', deadlineSeconds: 5 });
      const error = await client.getJob('fed').catch((e: unknown) => e as GramfuseError);
      client.close();
      expect((error as GramfuseError).code).toBe(ErrorCode.Unavailable);
    });

    it('a fingerprint mismatch', async () => {
      const client = connectFederation({ address: `localhost:${server.port}`, tls: tlsOf('org0') });
      const error = await client
        .join({ jobId: 'fed', fingerprint: `sha256:${'1'.repeat(64)}`, manifestJson: '{}' })
        .catch((e: unknown) => e as GramfuseError);
      const status = await client.getJob('fed');
      client.close();
      expect((error as GramfuseError).code).toBe(ErrorCode.FingerprintMismatch);
      expect((error as GramfuseError).message).toMatch(/org0's model has fingerprint sha256:1{64}, the job's template sha256:/);
      expect(status.state).toBe('open');
    });

    it(
      'a chunk whose hash does not match, a statistic not in the template, then a duplicate upload is idempotent',
      { timeout: 120_000 },
      async () => {
        const options = agentOptions('org0', server.port, 'fed', join(work, 'reject', 'org0'));
        // First a correct run (collects the bundle and uploads everything).
        const ok = await runAgent(options);
        expect(ok.receipts).toBe(64);
        const client = connectFederation({ address: `localhost:${server.port}`, tls: tlsOf('org1') });
        const { verifyBundle } = await import('../../shared/merge/index.js');
        const { manifest } = await verifyBundle(join(work, 'reject', 'org0', 'fed', 'bundle'));
        // org1 joins with a manifest that claims an extra statistic.
        const forged = {
          ...manifest,
          plan: {
            ...manifest.plan,
            owner: 'org1',
            statistics: [...manifest.plan.statistics, { ...manifest.plan.statistics[0]!, id: 'gram/g99' }],
          },
        };
        const extra = await client
          .join({ jobId: 'fed', fingerprint: manifest.plan.fingerprint, manifestJson: JSON.stringify(forged) })
          .catch((e: unknown) => e as GramfuseError);
        expect((extra as GramfuseError).code).toBe(ErrorCode.UploadInvalid);
        expect((extra as GramfuseError).message).toMatch(/statistic gram\/g99 is not in the job's template/);
        // A proper manifest for org1, then a chunk with a wrong digest.
        await client.join({
          jobId: 'fed',
          fingerprint: manifest.plan.fingerprint,
          manifestJson: JSON.stringify({ ...manifest, plan: { ...manifest.plan, owner: 'org1' } }),
        });
        const s = manifest.plan.statistics[0]!;
        async function* bad(): AsyncGenerator<federation.Chunk> {
          await Promise.resolve();
          yield federation.Chunk.fromPartial({
            jobId: 'fed',
            statisticId: s.id,
            dtype: s.dtype,
            shape: s.shape.map(BigInt),
            packing: s.packing,
            index: 0,
            count: 1,
            offset: 0n,
            data: new Uint8Array(s.bytes),
            sha256: '0'.repeat(64),
          });
        }
        const wrong = await client.upload(bad(), 30).catch((e: unknown) => e as { code: number; details: string });
        expect((wrong as { code: number }).code).toBe(3); // INVALID_ARGUMENT: the sender's fault, not data loss
        expect((wrong as { details: string }).details).toMatch(/^UPLOAD_INVALID: chunk 0 of gram\/g0 fails its SHA-256 check/);
        client.close();
        // The same owner uploading again: nothing is sent twice.
        const again = await runAgent(options);
        expect(again.chunksSent).toBe(0);
        const statusClient = connectFederation({ address: `localhost:${server.port}`, tls: tlsOf('org0') });
        const status = await statusClient.getJob('fed');
        statusClient.close();
        expect(status.state).toBe('collecting');
        expect(status.completed).toEqual(['org0']);
      },
    );
  });
});

function totalChunksOf(bundle: string, chunkBytes: number): number {
  const manifest = JSON.parse(readFileSync(join(bundle, 'manifest.json'), 'utf8')) as { plan: { statistics: { bytes: number }[] } };
  return manifest.plan.statistics.reduce((s, x) => s + Math.max(1, Math.ceil(x.bytes / chunkBytes)), 0);
}
