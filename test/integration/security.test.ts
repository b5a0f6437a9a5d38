import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runAgent } from '../../agent/index.js';
import { type ClientTls, connectFederation, type FederationClient } from '../../client/index.js';
import { Coordinator, type CoordinatorServer, startCoordinatorServer } from '../../coordinator/index.js';
import { federation } from '../../proto/index.js';
import { ErrorCode, errorFromGrpc, GramfuseError } from '../../shared/index.js';
import { FileLedger, verifyLedger } from '../../shared/audit/index.js';
import { parseSafetensors } from '../../shared/merge/index.js';
import { type CertificateBundle, createCertificateAuthority, generateSigningKeys, issueCertificate } from '../../shared/security/index.js';
import { exampleAgent, exampleBundle } from '../helpers/agent-options.js';
import { runCli } from '../helpers/cli.js';
import { EXAMPLE_DATA, EXAMPLE_LABELS, exampleModel, EXAMPLE_TOKENIZER } from '../helpers/examples.js';

/**
 * Issue #14: authorization in one place, limits on what a remote party controls, the owner's policy final,
 * key files private, ledgers not self-certifying. Runs on the shipped example models (no ../shared needed).
 */
const work = mkdtempSync(join(tmpdir(), 'gramfuse-security-'));
let ca: CertificateBundle;
const certs = new Map<string, CertificateBundle>();
let server: CoordinatorServer;
const tlsOf = (name: string): ClientTls => ({ caPem: ca.certPem, certPem: certs.get(name)!.certPem, keyPem: certs.get(name)!.keyPem });
const clientOf = (name: string): FederationClient =>
  connectFederation({ address: `localhost:${server.port}`, tls: tlsOf(name), deadlineSeconds: 10 });
const template = (): Buffer => readFileSync(exampleModel('org0'));
const codeOf = async (promise: Promise<unknown>): Promise<string> =>
  promise.then(
    () => 'OK',
    (error: unknown) => (error instanceof GramfuseError ? error : errorFromGrpc(error as { code?: number; details?: string })).code,
  );

beforeAll(async () => {
  ca = await createCertificateAuthority('security test CA');
  for (const name of ['creator', 'org0', 'org1', 'org9', 'mallory']) certs.set(name, await issueCertificate(ca, name));
  const serverCert = await issueCertificate(ca, 'coordinator', { hosts: ['localhost', '127.0.0.1'] });
  mkdirSync(join(work, 'templates'));
  writeFileSync(join(work, 'templates', 'org0.onnx'), template());
  server = await startCoordinatorServer({
    stateDir: join(work, 'state'),
    listen: '127.0.0.1:0',
    tls: { caPem: ca.certPem, certPem: serverCert.certPem, keyPem: serverCert.keyPem },
    creators: ['creator'],
    templateDirs: [join(work, 'templates')],
  });
  const creator = clientOf('creator');
  await creator.createJob(JSON.stringify({ id: 'job-a', participants: ['org0', 'org1'] }), template());
  await creator.createJob(JSON.stringify({ id: 'job-b', participants: ['org9'] }), template());
  creator.close();
}, 60_000);
afterAll(async () => {
  await server?.close();
  rmSync(work, { recursive: true, force: true });
});

describe('authorize(): every RPC × {creator, participant, participant of another job, unknown identity}', () => {
  type Rpc =
    | 'Jobs/Create'
    | 'Jobs/Get'
    | 'Jobs/Watch'
    | 'Uploads/Join'
    | 'Uploads/State'
    | 'Uploads/Upload'
    | 'Results/Download'
    | 'Results/ReportEvaluation';
  const roles = { creator: 'creator', participant: 'org0', 'participant of another job': 'org9', unknown: 'mallory' } as const;
  // The rule table, written from the issue (not from the code): who may do what on job-a.
  const allowed: Record<Rpc, readonly (keyof typeof roles)[]> = {
    'Jobs/Create': ['creator'],
    'Jobs/Get': ['creator', 'participant'],
    'Jobs/Watch': ['creator', 'participant'],
    'Uploads/Join': ['participant'],
    'Uploads/State': ['participant'],
    'Uploads/Upload': ['participant'],
    'Results/Download': ['creator', 'participant'],
    'Results/ReportEvaluation': ['participant'],
  };
  let counter = 0;
  const call = (rpc: Rpc, client: FederationClient): Promise<unknown> => {
    switch (rpc) {
      case 'Jobs/Create':
        return client.createJob(JSON.stringify({ id: `new-${counter++}`, participants: ['org0'] }), template());
      case 'Jobs/Get':
        return client.getJob('job-a');
      case 'Jobs/Watch':
        // An authorized watch of an open job streams until cancelled: the first status is the answer.
        return new Promise((resolve, reject) => {
          client.watch('job-a', (status) => resolve(status)).catch(reject);
          setTimeout(() => resolve('no status in 3 s'), 3000);
        });
      case 'Uploads/Join':
        return client.join({ jobId: 'job-a', fingerprint: 'sha256:0', manifestJson: '{}' });
      case 'Uploads/State':
        return client.uploadState('job-a');
      case 'Uploads/Upload':
        return client.upload(
          (async function* () {
            await Promise.resolve();
            yield federation.Chunk.fromPartial({
              jobId: 'job-a',
              statisticId: 'count/examples',
              dtype: 'float64',
              packing: 'dense',
              index: 0,
              count: 1,
              offset: 0n,
              data: new Uint8Array(8),
              sha256: '0'.repeat(64),
            });
          })(),
          10,
        );
      case 'Results/Download':
        return client.download('job-a', 'merged.onnx');
      case 'Results/ReportEvaluation':
        return client.reportEvaluation({ jobId: 'job-a', examples: 10n, accuracy: 0.5, macroF1: 0.5 });
    }
  };
  const cases = (Object.keys(allowed) as Rpc[]).flatMap((rpc) =>
    (Object.keys(roles) as (keyof typeof roles)[]).map((role) => [rpc, role] as const),
  );
  it.each(cases)('%s as %s', async (rpc, role) => {
    const client = clientOf(roles[role]);
    try {
      const code = await codeOf(call(rpc, client));
      if (allowed[rpc].includes(role)) expect(code, `${rpc} by ${role}`).not.toBe(ErrorCode.NotAuthorized);
      else expect(code, `${rpc} by ${role}`).toBe(ErrorCode.NotAuthorized);
    } finally {
      client.close();
    }
  });

  it('Jobs/List shows each identity only the jobs it takes part in or created', async () => {
    const seen = async (name: string): Promise<string[]> => {
      const client = clientOf(name);
      const jobs = new federation.JobsClient(
        `localhost:${server.port}`,
        (await import('@grpc/grpc-js')).credentials.createSsl(
          Buffer.from(ca.certPem),
          Buffer.from(certs.get(name)!.keyPem),
          Buffer.from(certs.get(name)!.certPem),
        ),
      );
      const reply = await new Promise<federation.ListJobsReply>((resolve, reject) =>
        jobs.list({}, (e, r) => (e === null ? resolve(r) : reject(e))),
      );
      jobs.close();
      client.close();
      return reply.jobs
        .map((j) => j.jobId)
        .filter((id) => id.startsWith('job-'))
        .sort();
    };
    expect(await seen('org0')).toEqual(['job-a']);
    expect(await seen('org9')).toEqual(['job-b']);
    expect(await seen('mallory')).toEqual([]);
    expect(await seen('creator')).toEqual(['job-a', 'job-b']);
  });
});

describe('templates, names and the insecure mode', () => {
  it('a template path outside the allowed directories is refused the same way whether or not it exists', async () => {
    const client = clientOf('creator');
    const messages: string[] = [];
    for (const path of [
      '/etc/passwd',
      '/dev/zero',
      join(work, 'no-such-file.onnx'),
      '../state/keys/receipts.json',
      join(work, 'templates', '..', 'state', 'audit.jsonl'),
    ]) {
      const error = (await client
        .createJob(JSON.stringify({ id: `path-${messages.length}`, participants: ['org0'] }), { path })
        .catch((e: unknown) => e)) as GramfuseError;
      expect(error.code, path).toBe(ErrorCode.NotAuthorized);
      messages.push(error.message.replace(JSON.stringify(path).slice(1, -1), 'PATH'));
      expect(error.message).not.toContain(join(work, 'templates'));
    }
    expect(new Set(messages).size).toBe(1);
    // Inside an allowed directory, by name: accepted.
    const created = await client.createJob(JSON.stringify({ id: 'by-name', participants: ['org0'] }), { path: 'org0.onnx' });
    expect(created.state).toBe('open');
    client.close();
  });

  it('participant names that could become paths are refused by the job spec', async () => {
    const client = clientOf('creator');
    for (const name of ['../org0', 'a/b', '.hidden', 'x'.repeat(65), '']) {
      const error = (await client
        .createJob(JSON.stringify({ id: 'bad-name', participants: [name] }), template())
        .catch((e: unknown) => e)) as GramfuseError;
      expect(error.code, name).toBe(ErrorCode.InvalidArgument);
      expect(error.message).toMatch(/participants\.0/);
    }
    client.close();
  });

  it('the client refuses insecure mode towards anything but loopback', () => {
    expect(() => connectFederation({ address: '10.1.2.3:7000', insecureIdentity: 'org0' })).toThrow(
      /--insecure-loopback talks to 127\.0\.0\.1, localhost or \[::1\] only, not 10\.1\.2\.3:7000/,
    );
    expect(() => connectFederation({ address: '[::1]:7000', insecureIdentity: 'org0' }).close()).not.toThrow();
  });

  it('an insecure-loopback identity that is not a valid name is NOT_AUTHORIZED', async () => {
    await using insecure = await startCoordinatorServer({
      stateDir: join(work, 'insecure'),
      listen: '127.0.0.1:0',
      insecureLoopback: true,
      creators: ['creator'],
    });
    const client = connectFederation({ address: `127.0.0.1:${insecure.port}`, insecureIdentity: '../../etc' });
    expect(await codeOf(client.getJob('x'))).toBe(ErrorCode.NotAuthorized);
    client.close();
  });

  it('a stream that mixes two jobs is refused; nothing of the second job is committed', { timeout: 120_000 }, async () => {
    const creator = clientOf('creator');
    await creator.createJob(JSON.stringify({ id: 'mix', participants: ['org0'], policy: { minRowsPerGroup: 16 } }), template());
    await creator.createJob(JSON.stringify({ id: 'job-c', participants: ['org0'], policy: { minRowsPerGroup: 16 } }), template());
    creator.close();
    const bundleDir = join(work, 'mix-bundle');
    const { manifest } = await exampleBundle('org0', bundleDir);
    const client = clientOf('org0');
    for (const jobId of ['mix', 'job-c'])
      await client.join({ jobId, fingerprint: manifest.plan.fingerprint, manifestJson: JSON.stringify(manifest) });
    const { tensors } = parseSafetensors(readFileSync(join(bundleDir, 'statistics.safetensors')), (r) => new Error(r));
    const chunk = (jobId: string): federation.Chunk => {
      const data = tensors.get('count/examples')!.bytes;
      return federation.Chunk.fromPartial({
        jobId,
        statisticId: 'count/examples',
        dtype: 'float64',
        packing: 'dense',
        index: 0,
        count: 1,
        offset: 0n,
        data,
        sha256: createHash('sha256').update(data).digest('hex'),
      });
    };
    const error = await client
      .upload(
        (async function* () {
          await Promise.resolve();
          yield chunk('mix');
          yield chunk('job-c');
        })(),
        10,
      )
      .catch((e: unknown) => e);
    expect(String((error as { details?: string }).details ?? (error as Error).message)).toMatch(
      /UPLOAD_INVALID: a chunk for job job-c arrived on an upload stream of job mix/,
    );
    const mix = await client.uploadState('mix');
    expect(mix.statistics.find((s) => s.statisticId === 'count/examples')?.committed).toBe(true);
    const other = await client.uploadState('job-c');
    expect(other.statistics.filter((s) => s.committed || s.held.length > 0)).toHaveLength(0);
    client.close();
  });
});

describe("the owner's policy is final", () => {
  const agent = (jobId: string, extra: Partial<Parameters<typeof runAgent>[0]> = {}): Parameters<typeof runAgent>[0] =>
    exampleAgent(
      'org0',
      { address: `localhost:${server.port}`, tls: tlsOf('org0'), deadlineSeconds: 10 },
      jobId,
      join(work, 'agent-org0', jobId),
      {
        maxLength: 64,
        ...extra,
      },
    );

  it("a job that lowers the owner's row minimum does not lower it", async () => {
    const creator = clientOf('creator');
    await creator.createJob(JSON.stringify({ id: 'low-rows', participants: ['org0'], policy: { minRowsPerGroup: 1 } }), template());
    creator.close();
    const { ownerPolicy } = await import('../../agent/index.js');
    let seen: number | undefined;
    const error = (await runAgent(
      agent('low-rows', {
        ownerPolicy: ownerPolicy({ minRowsPerGroup: 1_000_000, minRowsGiven: true }),
        onPolicy: (e) => (seen = e.policy.minRowsPerGroup),
      }),
    ).catch((e: unknown) => e)) as GramfuseError;
    expect(seen).toBe(1_000_000);
    expect(error.code).toBe(ErrorCode.PolicyViolation);
    expect(existsSync(join(work, 'state', 'jobs', 'low-rows', 'owners', 'org0'))).toBe(false);
  });

  it('a job that needs a layer the owner forbids is refused before anything is computed or sent', async () => {
    const creator = clientOf('creator');
    await creator.createJob(JSON.stringify({ id: 'layers', participants: ['org0'] }), template());
    creator.close();
    const { ownerPolicy } = await import('../../agent/index.js');
    let collected = 0;
    const error = (await runAgent(
      agent('layers', {
        ownerPolicy: ownerPolicy({ minRowsPerGroup: 1, minRowsGiven: true, allowedLayers: ['no-such-weight'] }),
        onCollect: () => collected++,
      }),
    ).catch((e: unknown) => e)) as GramfuseError;
    expect(error.code).toBe(ErrorCode.PolicyViolation);
    expect(collected).toBe(0);
    expect(existsSync(join(work, 'agent-org0', 'layers', 'layers', 'bundle'))).toBe(false);
  });

  it("a job whose template the owner's policy file excludes is POLICY_VIOLATION naming the rule", async () => {
    writeFileSync(join(work, 'agent-policy.yaml'), `expectFingerprint: sha256:${'a'.repeat(64)}\nminRowsPerGroup: 8\n`);
    const result = await runCli([
      'agent',
      'run',
      '--coordinator',
      `localhost:${server.port}`,
      '--job',
      'layers',
      '--model',
      exampleModel('org0'),
      '--data',
      EXAMPLE_DATA('org0'),
      '--tokenizer',
      EXAMPLE_TOKENIZER,
      '--policy',
      join(work, 'agent-policy.yaml'),
      '--work-dir',
      join(work, 'cli-agent'),
      '--yes',
      '--json',
      '--tls-ca',
      writeTemp('ca.pem', ca.certPem),
      '--tls-cert',
      writeTemp('org0.pem', certs.get('org0')!.certPem),
      '--tls-key',
      writeTemp('org0-key.pem', certs.get('org0')!.keyPem, 0o600),
    ]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/POLICY_VIOLATION: rule expect-fingerprint \(owner, policy file .*agent-policy\.yaml\)/);
    const bad = await runCli([
      'agent',
      'plan',
      '--model',
      exampleModel('org0'),
      '--data',
      EXAMPLE_DATA('org0'),
      '--tokenizer',
      EXAMPLE_TOKENIZER,
      '--policy',
      writeTemp('bad-policy.yaml', 'minRowsPerGroup: -3\nextra: 1\n'),
    ]);
    expect(bad.stderr).toMatch(/INVALID_ARGUMENT: .*bad-policy\.yaml: minRowsPerGroup: .*; \(root\): Unrecognized key/);
  });
});

describe('key files, results and evaluation reports', () => {
  it('key files are written 0600 and refused when group- or world-readable', async () => {
    const certDir = join(work, 'certs');
    expect((await runCli(['certs', 'init', '--dir', certDir])).code).toBe(0);
    expect((await runCli(['certs', 'issue', '--dir', certDir, '--name', 'org5'])).code).toBe(0);
    for (const f of ['ca-key.pem', 'org5-key.pem']) expect(statSync(join(certDir, f)).mode & 0o777, f).toBe(0o600);
    expect(statSync(join(work, 'state', 'keys', 'receipts.json')).mode & 0o777).toBe(0o600);
    chmodSync(join(certDir, 'ca-key.pem'), 0o640);
    const issued = await runCli(['certs', 'issue', '--dir', certDir, '--name', 'org6']);
    expect(issued.stderr).toMatch(
      /KEY_FILE_EXPOSED: .*ca-key\.pem: the CA key is accessible by group or others \(mode 0640\); restrict it with `chmod 600/,
    );
    const state = join(work, 'exposed-state');
    await Coordinator.open(state, { creators: [] });
    chmodSync(join(state, 'keys', 'receipts.json'), 0o644);
    await expect(Coordinator.open(state, { creators: [] })).rejects.toMatchObject({ code: ErrorCode.KeyFileExposed });
  });

  it('a federated job end to end: reports are range-checked, the download is verified and atomic', { timeout: 180_000 }, async () => {
    const creator = clientOf('creator');
    await creator.createJob(JSON.stringify({ id: 'solo', participants: ['org0'], policy: { minRowsPerGroup: 16 } }), template());
    // Before a result exists, a report is refused and nothing is signed into the ledger.
    const org0 = clientOf('org0');
    expect(await codeOf(org0.reportEvaluation({ jobId: 'solo', examples: 5n, accuracy: 0.5, macroF1: 0.5 }))).toBe(ErrorCode.JobClosed);
    // The owner allows Grams of 16 rows (exampleAgent's owner policy): the job's 16 is then the same rule.
    await runAgent(
      exampleAgent('org0', { address: `localhost:${server.port}`, tls: tlsOf('org0') }, 'solo', join(work, 'solo-agent'), {
        maxLength: 64,
      }),
    );
    const final = await creator.watch('solo', () => undefined);
    expect(final.state).toBe('done');
    for (const [examples, accuracy, macroF1] of [
      [-5n, 0.5, 0.5],
      [10n, 7.5, 0.5],
      [10n, 0.5, -1],
      [0n, 0.5, 0.5],
    ] as const) {
      const error = (await org0.reportEvaluation({ jobId: 'solo', examples, accuracy, macroF1 }).catch((e: unknown) => e)) as GramfuseError;
      expect(error.code, `${examples} ${accuracy} ${macroF1}`).toBe(ErrorCode.InvalidArgument);
    }
    const ledger = readFileSync(join(work, 'state', 'audit.jsonl'), 'utf8');
    expect(ledger).not.toMatch(/"kind":"evaluation.reported"/);
    await org0.reportEvaluation({ jobId: 'solo', examples: 10n, accuracy: 0.5, macroF1: 0.25 });
    const reported = readFileSync(join(work, 'state', 'audit.jsonl'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as { kind: string; facts: Record<string, unknown> })
      .filter((r) => r.kind === 'evaluation.reported');
    expect(reported.map((r) => [r.facts.owner, r.facts.model, r.facts.examples])).toEqual([['org0', final.resultSha256, 10]]);
    // Download: verified against the job's digest; a wrong digest leaves no file.
    const out = join(work, 'solo.onnx');
    const got = await creator.downloadTo('solo', 'merged.onnx', out, final.resultSha256);
    expect(got.sha256).toBe(final.resultSha256);
    const wrong = join(work, 'wrong.onnx');
    const error = (await creator.downloadTo('solo', 'merged.onnx', wrong, '0'.repeat(64)).catch((e: unknown) => e)) as GramfuseError;
    expect(error.code).toBe(ErrorCode.UploadInvalid);
    expect(existsSync(wrong)).toBe(false);
    org0.close();
    creator.close();
  });
});

describe('one corrupt job does not stop the coordinator', () => {
  it('it is quarantined with STATE_CORRUPT; the other jobs load', async () => {
    const state = join(work, 'quarantine-state');
    const first = await Coordinator.open(state, { creators: ['creator'] });
    for (const id of ['good', 'broken']) await first.createJob('creator', { id, participants: ['org0'] }, template());
    writeFileSync(join(state, 'jobs', 'broken', 'state.json'), '{"state": "open", trunc');
    const again = await Coordinator.open(state, { creators: ['creator'] });
    expect(again.view('good').state).toBe('open');
    expect(() => again.view('broken')).toThrow(
      /job broken is quarantined: its state on the coordinator could not be loaded \(STATE_CORRUPT: .*state\.json: not valid JSON/,
    );
    try {
      again.view('broken');
    } catch (error) {
      expect((error as GramfuseError).code).toBe(ErrorCode.StateCorrupt);
    }
  });
});

describe('ledgers are not self-certifying', () => {
  it('a record that introduces a key after the first is refused; a rotation signed by the previous key verifies', async () => {
    const path = join(work, 'ledger.jsonl');
    const keys = generateSigningKeys();
    const ledger = await FileLedger.open(path, keys, 'writer');
    await ledger.append('job.created', 'j', { n: 1 });
    const first = await verifyLedger(path);
    expect(first.trustedKeyIds).toEqual([ledger.keyId]);
    // An attacker appends under a key of its own, introduced by a second ledger.opened (chained on, signed by
    // that key): verify without --keys accepted this before; only the first record may introduce a key now.
    const forged = join(work, 'forged.jsonl');
    writeFileSync(forged, readFileSync(path));
    const evil = generateSigningKeys();
    const attacker = await FileLedger.open(forged, evil, 'writer');
    await attacker.append('ledger.opened', '', { publicKey: evil.publicKeyPem, actor: 'writer' });
    await attacker.append('evaluation.reported', 'j', { accuracy: 1 });
    await expect(verifyLedger(forged)).rejects.toThrow(
      /record at line 3 \(seq 3\) opens the ledger again: only the first record may introduce a key/,
    );
    const cli = await runCli(['audit', 'verify', '--ledger', path]);
    expect(cli.stdout).toContain(`trusted key ${ledger.keyId} (introduced by its first record`);
    // A proper rotation: signed by the key in force, later records by the new key.
    const next = generateSigningKeys();
    await ledger.rotateKey(next);
    await ledger.append('job.created', 'j2', { n: 2 });
    expect((await verifyLedger(path)).records).toHaveLength(4);
    expect(ledger.keyId).not.toBe(first.trustedKeyIds[0]);
  });
});

describe('errors a user can act on', () => {
  it('a garbage protobuf frame to Jobs/Get or Uploads/Upload gets INVALID_ARGUMENT from gramfuse, not grpc-js INTERNAL', async () => {
    const grpcJs = await import('@grpc/grpc-js');
    const channel = new grpcJs.Client(
      `localhost:${server.port}`,
      grpcJs.credentials.createSsl(
        Buffer.from(ca.certPem),
        Buffer.from(certs.get('org0')!.keyPem),
        Buffer.from(certs.get('org0')!.certPem),
      ),
    );
    const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f]);
    const unary = await new Promise<{ code?: number; details?: string }>((resolve) =>
      channel.makeUnaryRequest(
        '/gramfuse.v1.Jobs/Get',
        (x: Buffer) => x,
        (b: Buffer) => b,
        garbage,
        (error) => resolve(error ?? {}),
      ),
    );
    expect(unary.code).toBe(3);
    expect(unary.details).toMatch(/^INVALID_ARGUMENT: \/gramfuse\.v1\.Jobs\/Get: the request is not a valid protobuf message/);
    const streamed = await new Promise<{ code?: number; details?: string }>((resolve) => {
      const call = channel.makeBidiStreamRequest(
        '/gramfuse.v1.Uploads/Upload',
        (x: Buffer) => x,
        (b: Buffer) => b,
      );
      call.on('error', (error: { code?: number; details?: string }) => resolve(error));
      call.on('data', () => undefined);
      call.on('end', () => resolve({}));
      call.write(garbage);
    });
    expect(streamed.code).toBe(3);
    expect(streamed.details).toMatch(/^INVALID_ARGUMENT: \/gramfuse\.v1\.Uploads\/Upload: the request is not a valid protobuf message/);
    channel.close();
  });

  it('UNAVAILABLE names the address and what to check, without grpc-js internals', async () => {
    const client = connectFederation({ address: '127.0.0.1:1', insecureIdentity: 'org0', deadlineSeconds: 2 });
    const error = (await client.getJob('x').catch((e: unknown) => e)) as GramfuseError;
    client.close();
    expect(error.code).toBe(ErrorCode.Unavailable);
    expect(error.message).toMatch(/the coordinator at 127\.0\.0\.1:1 is unreachable .*check the address and port/);
    expect(error.message).not.toMatch(/Resolution note/);
  }, 60_000);

  it('eval with a label list of the wrong length says so, not a data line', async () => {
    const labels = writeTemp('five-labels.json', JSON.stringify(['a', 'b', 'c', 'd', 'e']));
    const result = await runCli([
      'eval',
      '--model',
      exampleModel('org0'),
      '--data',
      EXAMPLE_DATA('org0'),
      '--tokenizer',
      EXAMPLE_TOKENIZER,
      '--labels',
      labels,
      '--max-examples',
      '8',
    ]);
    expect(result.stderr).toMatch(/INVALID_ARGUMENT: --labels: the label list has 5 labels, but .* outputs 14 logits/);
    expect(JSON.parse(readFileSync(EXAMPLE_LABELS, 'utf8'))).toHaveLength(14);
  });

  it('merge refuses --label-field without --alpha auto (it reads no labels) instead of ignoring it', async () => {
    const result = await runCli([
      'merge',
      '--method',
      'average',
      '--model',
      exampleModel('org0'),
      '--model',
      exampleModel('org1'),
      '--label-field',
      'x',
      '--out',
      join(work, 'x.onnx'),
    ]);
    expect(result.code).not.toBe(0);
    // Since α-auto (issue 43) merge reads labels from --validation-data; without --alpha auto it still reads none.
    expect(result.stderr).toMatch(/INVALID_ARGUMENT: .*label-?[fF]ield.*only with --alpha auto/);
  });

  it('a manifest that fails its schema gets dot-path messages, not a zod dump', async () => {
    const client = clientOf('org0');
    const error = (await client
      .join({
        jobId: 'job-a',
        fingerprint: (await client.getJob('job-a')).fingerprint,
        manifestJson: JSON.stringify({ plan: { owner: 5 } }),
      })
      .catch((e: unknown) => e)) as GramfuseError;
    client.close();
    expect(error.code).toBe(ErrorCode.UploadInvalid);
    expect(error.message).toMatch(/the manifest is not a valid statistics manifest \((\(root\)|plan\.owner|[a-z.]+): /);
    expect(error.message).not.toMatch(/"code":|\[\s*\{/);
  });

  it('a bundle file over 2 GiB is a coded error, not INTERNAL', async () => {
    const { truncateSync } = await import('node:fs');
    const dir = join(work, 'huge-bundle');
    mkdirSync(dir);
    const big = join(dir, 'big.bin');
    writeFileSync(big, '');
    truncateSync(big, 2 ** 31 + 16); // sparse: no disk used
    const { fileError } = await import('../../shared/index.js');
    const error = await readFileBig(big).catch((e: unknown) => fileError(e, big, 'reading the statistics bundle'));
    expect(error.code).toBe(ErrorCode.InvalidData);
    expect(error.message).toMatch(/larger than 2 GiB/);
    rmSync(big);
  });

  it('audit publish to a NATS server that is not there fails and says nothing is confirmed', async () => {
    const path = join(work, 'publish.jsonl');
    const ledger = await FileLedger.open(path, generateSigningKeys(), 'writer');
    await ledger.append('job.created', 'j', {});
    const result = await runCli(['audit', 'publish', '--ledger', path, '--nats', 'nats://127.0.0.1:1', '--timeout', '2']);
    expect(result.code).not.toBe(0);
    expect(result.stdout).not.toMatch(/are on NATS|are in stream/);
    expect(result.stderr).toMatch(/UNAVAILABLE/);
  }, 60_000);
});

async function readFileBig(path: string): Promise<never> {
  const { readFile } = await import('node:fs/promises');
  await readFile(path);
  throw new Error(`${path}: read whole, unexpectedly`);
}

function writeTemp(name: string, text: string, mode = 0o644): string {
  const path = join(work, name);
  writeFileSync(path, text, { mode });
  chmodSync(path, mode);
  return path;
}
