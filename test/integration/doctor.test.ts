// Issue 41 item 5: `gramfuse doctor`, run as a real process against real files, a real coordinator over mTLS on
// loopback and a real nats-server started with deploy/nats-server.conf. A broken setup names each of its problems with
// the fix; a good one is all ok.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { federation as proto } from '../../proto/index.js';

import { exitCodeByErrorCode, grpcStatusByErrorCode } from '../../shared/index.js';
import { createCertificateAuthority, issueCertificate } from '../../shared/security/index.js';
import { runCli } from '../helpers/cli.js';
import { type MtlsCoordinator, startMtlsCoordinator } from '../helpers/mtls-coordinator.js';
import { SecureNats } from '../helpers/nats-secure.js';

interface Check {
  readonly name: string;
  readonly status: 'ok' | 'warn' | 'fail';
  readonly detail: string;
  readonly fix?: string;
}

let work: string;
let federation: MtlsCoordinator;
let nats: SecureNats;
let caFile: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'gramfuse-doctor-'));
  federation = await startMtlsCoordinator('doctor CA', ['owner-a'], { stateDir: join(work, 'state') });
  nats = await SecureNats.start();
  caFile = join(work, 'ca.pem');
  await writeFile(caFile, federation.ca.certPem);
});
afterAll(async () => {
  await federation?.server.close();
  await nats?.stop();
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

/** Writes a certificate and its key (mode `mode`) under `work`; returns the --tls-* flags. */
async function certFiles(name: string, certPem: string, keyPem: string, mode = 0o600): Promise<string[]> {
  const cert = join(work, `${name}.pem`);
  const key = join(work, `${name}-key.pem`);
  await writeFile(cert, certPem);
  await writeFile(key, keyPem, { mode });
  await chmod(key, mode);
  return ['--tls-cert', cert, '--tls-key', key];
}

// Thresholds the shared test machine always meets: these tests are about certificates and connections.
const resources = (): string[] => ['--work-dir', work, '--min-free-disk', '1MiB', '--min-free-memory', '1MiB'];

const byName = (checks: readonly Check[], name: string): Check[] => checks.filter((c) => c.name === name);

describe('gramfuse doctor', () => {
  it('passes a good agent setup: every check ok (CUDA ok or a CPU-only warning), exit 0', async () => {
    const owner = federation.cert('owner-a');
    const tls = await certFiles('owner-a', owner.certPem, owner.keyPem);
    const result = await runCli([
      'doctor',
      '--role',
      'agent',
      '--tls-ca',
      caFile,
      ...tls,
      '--coordinator',
      federation.address,
      ...nats.roles['agent-mirror'].args,
      ...resources(),
      '--json',
    ]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const { checks } = JSON.parse(result.stdout) as { checks: Check[] };
    const names = checks.map((c) => c.name);
    for (const name of [
      'certificate.files',
      'certificate.chain',
      'certificate.role',
      'certificate.names',
      'certificate.expiry',
      'key.permissions',
      'key.match',
      'coordinator',
      'nats',
      'disk',
      'memory',
      'cuda',
    ])
      expect(names).toContain(name);
    for (const check of checks.filter((c) => c.name !== 'cuda')) expect(check, check.name).toMatchObject({ status: 'ok' });
    expect(['ok', 'warn']).toContain(byName(checks, 'cuda')[0]!.status);
    expect(byName(checks, 'coordinator')[0]!.detail).toContain('answered over mTLS as owner-a');
    expect(byName(checks, 'nats')[0]!.detail).toContain('credentials file over TLS');
  });

  it('names each problem of a broken setup: expired certificate, 0644 key, wrong CA, NATS without credentials', async () => {
    // Expired: valid for 30 days from 400 days ago, signed by the federation CA.
    const expired = await issueCertificate(federation.ca, 'owner-b', { notBefore: new Date(Date.now() - 400 * 86_400_000), days: 30 });
    const tls = await certFiles('owner-b', expired.certPem, expired.keyPem, 0o644);
    // Wrong CA: another federation's.
    const otherCa = join(work, 'other-ca.pem');
    await writeFile(otherCa, (await createCertificateAuthority('some other CA')).certPem);
    const args = [
      'doctor',
      '--role',
      'agent',
      '--tls-ca',
      otherCa,
      ...tls,
      '--coordinator',
      federation.address,
      // NATS over TLS with the right CA, but no credentials: deploy/nats-server.conf has no anonymous user.
      '--nats',
      nats.url,
      '--nats-tls-ca',
      nats.caFile,
      ...resources(),
    ];
    const text = await runCli(args);
    expect(text.code).toBe(exitCodeByErrorCode.PREFLIGHT_FAILED);
    expect(text.stderr).toContain('PREFLIGHT_FAILED');
    const lines = text.stdout.trimEnd().split('\n');
    const line = (name: string): string => {
      const found = lines.filter((l) => new RegExp(`^(ok|warn|fail) +${name.replace('.', '\\.')}  `).test(l));
      expect(found, `${name} in\n${text.stdout}`).toHaveLength(1);
      return found[0]!;
    };
    expect(line('certificate.chain')).toMatch(
      /^fail +certificate\.chain .*was not signed by the CA in --tls-ca .*other-ca\.pem.*fix: pass the federation's ca\.pem/,
    );
    expect(line('certificate.expiry')).toMatch(/^fail +certificate\.expiry +expired .*\(3\d\d days ago\).*fix: renew it/);
    expect(line('key.permissions')).toMatch(
      /^fail +key\.permissions .*owner-b-key\.pem is accessible by group or others \(mode 0644\).*fix: chmod 600 .*owner-b-key\.pem$/,
    );
    expect(line('nats')).toMatch(/^fail +nats +NOT_AUTHORIZED: .*fix: pass this role's NATS credentials: --nats-creds/);
    expect(line('coordinator')).toMatch(/^fail +coordinator .*did not answer over mTLS/);
    // What is right stays right: the key is the certificate's, the identity is named.
    expect(line('key.match')).toMatch(/^ok +key\.match/);
    expect(line('certificate.role')).toMatch(/^ok +certificate\.role +role owner/);

    const json = await runCli([...args, '--json']);
    expect(json.code).toBe(exitCodeByErrorCode.PREFLIGHT_FAILED);
    const { checks } = JSON.parse(json.stdout) as { checks: Check[] };
    const failed = checks.filter((c) => c.status === 'fail').map((c) => c.name);
    expect(failed.sort()).toEqual(['certificate.chain', 'certificate.expiry', 'coordinator', 'key.permissions', 'nats']);
    for (const check of checks.filter((c) => c.status !== 'ok')) expect(check.fix, check.name).toBeTruthy();
  });

  it('fails a certificate of the wrong role and a key of another certificate; warns a certificate near its end', async () => {
    // A server certificate (the coordinator's kind) with 10 days left, and the key of a different certificate.
    const server = await issueCertificate(federation.ca, 'owner-c', { hosts: ['localhost'], days: 10 });
    const other = await issueCertificate(federation.ca, 'owner-c');
    const tls = await certFiles('owner-c', server.certPem, other.keyPem);
    const result = await runCli(['doctor', '--role', 'agent', '--tls-ca', caFile, ...tls, ...resources(), '--json']);
    expect(result.code).toBe(exitCodeByErrorCode.PREFLIGHT_FAILED);
    const { checks } = JSON.parse(result.stdout) as { checks: Check[] };
    expect(byName(checks, 'certificate.role')[0]).toMatchObject({ status: 'fail' });
    expect(byName(checks, 'certificate.role')[0]!.detail).toContain('issued for role server; the agent needs role owner');
    expect(byName(checks, 'certificate.expiry')[0]).toMatchObject({ status: 'warn' });
    expect(byName(checks, 'certificate.expiry')[0]!.detail).toMatch(/in (9|10) days/);
    expect(byName(checks, 'key.match')[0]).toMatchObject({ status: 'fail' });
    expect(byName(checks, 'key.match')[0]!.detail).toContain('is not the key of');
    expect(byName(checks, 'certificate.chain')[0]).toMatchObject({ status: 'ok' });
    // No --coordinator: said, not silently skipped.
    expect(byName(checks, 'coordinator')[0]).toMatchObject({ status: 'warn' });
  });

  it('names a coordinator that refuses this identity (NOT_AUTHORIZED, or a bare PERMISSION_DENIED / UNAUTHENTICATED)', async () => {
    // A purpose-built coordinator on loopback, mTLS with the federation CA, refusing ListJobs: once as gramfuse does
    // (a coded NOT_AUTHORIZED), once as a proxy in front of it might (bare gRPC statuses).
    const serverCert = await issueCertificate(federation.ca, 'refusing', { hosts: ['localhost', '127.0.0.1'] });
    const refusals: grpc.StatusObject[] = [
      { code: grpcStatusByErrorCode.NOT_AUTHORIZED, details: 'NOT_AUTHORIZED: owner-a is not known here', metadata: new grpc.Metadata() },
      { code: grpc.status.PERMISSION_DENIED, details: 'denied by policy', metadata: new grpc.Metadata() },
      { code: grpc.status.UNAUTHENTICATED, details: 'who are you', metadata: new grpc.Metadata() },
    ];
    let refusal = refusals[0]!;
    const server = new grpc.Server();
    server.addService(proto.JobsService, {
      list: (_call: unknown, done: grpc.sendUnaryData<proto.ListJobsReply>) => done(refusal),
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(
        '127.0.0.1:0',
        grpc.ServerCredentials.createSsl(
          Buffer.from(federation.ca.certPem),
          [{ cert_chain: Buffer.from(serverCert.certPem), private_key: Buffer.from(serverCert.keyPem) }],
          true,
        ),
        (e, p) => (e === null ? resolve(p) : reject(e)),
      ),
    );
    try {
      const owner = federation.cert('owner-a');
      const tls = await certFiles('owner-a', owner.certPem, owner.keyPem);
      for (refusal of refusals) {
        const result = await runCli([
          'doctor',
          '--role',
          'agent',
          '--tls-ca',
          caFile,
          ...tls,
          '--coordinator',
          `localhost:${port}`,
          ...resources(),
          '--json',
        ]);
        expect(result.code, refusal.details).toBe(exitCodeByErrorCode.PREFLIGHT_FAILED);
        const { checks } = JSON.parse(result.stdout) as { checks: Check[] };
        const line = byName(checks, 'coordinator')[0]!;
        expect(line, refusal.details).toMatchObject({ status: 'fail' });
        expect(line.detail).toContain(`localhost:${port} refused owner-a`);
        expect(line.detail).toContain(refusal.details.replace(/^NOT_AUTHORIZED: /, ''));
        expect(line.fix).toContain("ask the coordinator's operator to list this identity");
      }
    } finally {
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    }
  });

  it("checks the coordinator's own certificate names the host agents dial", async () => {
    const server = await issueCertificate(federation.ca, 'coordinator-2', { hosts: ['coord.example.org'] });
    const tls = await certFiles('coordinator-2', server.certPem, server.keyPem);
    const result = await runCli([
      'doctor',
      '--role',
      'coordinator',
      '--tls-ca',
      caFile,
      ...tls,
      '--coordinator',
      federation.address,
      ...resources(),
      '--json',
    ]);
    const { checks } = JSON.parse(result.stdout) as { checks: Check[] };
    expect(byName(checks, 'certificate.names')[0]).toMatchObject({ status: 'fail' });
    expect(byName(checks, 'certificate.names')[0]!.detail).toContain('clients dial localhost');
    expect(byName(checks, 'certificate.names')[0]!.fix).toContain('--host localhost');
    expect(byName(checks, 'certificate.role')[0]).toMatchObject({ status: 'ok' });
  });
});
