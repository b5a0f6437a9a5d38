// Faults on the agent's side: the agent process killed with SIGKILL mid-upload and started again with the
// same command; the agent's connection dropped by a TCP proxy mid-upload; a coordinator that never
// answers (a deadline, not a hang).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runAgent } from '../../../agent/index.js';
import { connectFederation } from '../../../client/index.js';
import { auditReconcile } from '../../../cli/index.js';
import { ErrorCode, type GramfuseError } from '../../../shared/index.js';
import { verifyLedger } from '../../../shared/audit/index.js';
import { createCertificateAuthority, issueCertificate } from '../../../shared/security/index.js';
import { CLI, runCli } from '../../helpers/cli.js';
import { CoordinatorProcess } from '../../helpers/coordinator-process.js';
import { exampleAgent, SMALL_JOB_OWNER_FLAGS } from '../../helpers/agent-options.js';
import { EXAMPLE_DATA, exampleModel, EXAMPLE_TOKENIZER } from '../../helpers/examples.js';
import { freePort } from '../../helpers/nats-server.js';
import { recordFault } from '../../helpers/reliability.js';
import { TcpProxy } from '../../helpers/tcp-proxy.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-agent-faults-'));
let coordinator: CoordinatorProcess;
beforeAll(async () => {
  coordinator = new CoordinatorProcess(await freePort(), join(work, 'state'));
  await coordinator.start();
});
afterAll(async () => {
  await coordinator.kill('SIGTERM');
  rmSync(work, { recursive: true, force: true });
});

async function createJob(id: string, participants: string[]): Promise<void> {
  const client = connectFederation({ address: coordinator.address, insecureIdentity: 'creator' });
  await client.createJob(JSON.stringify({ id, participants, policy: { minRowsPerGroup: 16 } }), readFileSync(exampleModel('org0')));
  client.close();
}

const agentArgs = (org: string, job: string, address: string): string[] => [
  'agent',
  'run',
  '--coordinator',
  address,
  '--insecure-loopback',
  '--identity',
  org,
  '--job',
  job,
  '--model',
  exampleModel(org),
  '--data',
  EXAMPLE_DATA(org),
  '--tokenizer',
  EXAMPLE_TOKENIZER,
  '--max-examples',
  '64',
  ...SMALL_JOB_OWNER_FLAGS,
  '--chunk-bytes',
  String(16 * 1024),
  '--work-dir',
  join(work, 'agents', job, org),
  '--yes',
  '--json',
];

async function commitsOf(job: string, owner: string, state = join(work, 'state')): Promise<string[]> {
  const { records } = await verifyLedger(join(state, 'audit.jsonl'));
  return records
    .filter((r) => r.kind === 'statistic.committed' && r.job === job && r.facts.owner === owner)
    .map((r) => String(r.facts.statistic));
}

describe('agent and network faults', () => {
  it(
    'an agent killed with SIGKILL mid-upload resumes with the same command; nothing is committed twice',
    { timeout: 300_000 },
    async () => {
      await createJob('agent-kill', ['org0']);
      const client = connectFederation({ address: coordinator.address, insecureIdentity: 'org0' });
      const child: ChildProcess = spawn(process.execPath, [CLI, ...agentArgs('org0', 'agent-kill', coordinator.address)], {
        stdio: 'ignore',
      });
      // Kill it once the coordinator holds part of its upload (some chunks, nothing complete or all committed).
      const started = Date.now();
      for (;;) {
        const state = await client.uploadState('agent-kill').catch(() => undefined);
        const held = state?.statistics.reduce((sum, s) => sum + s.held.length, 0) ?? 0;
        if (held > 20) break;
        if (Date.now() - started > 120_000) throw new Error('the agent never started uploading');
        await new Promise((r) => setTimeout(r, 20));
      }
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const before = await client.uploadState('agent-kill');
      expect(before.statistics.some((s) => !s.committed)).toBe(true);
      const again = await runCli(agentArgs('org0', 'agent-kill', coordinator.address));
      expect(again.code, again.stderr).toBe(0);
      const summary = JSON.parse(again.stdout) as { reusedBundle: boolean; chunksSent: number };
      expect(summary.reusedBundle).toBe(true);
      client.close();
      const commits = await commitsOf('agent-kill', 'org0');
      expect(commits).toHaveLength(64);
      expect(new Set(commits).size).toBe(64);
      // The restarted agent holds a receipt for every statistic, including those committed before it was killed.
      const reconciled = await auditReconcile(
        join(work, 'agents', 'agent-kill', 'org0', 'audit.jsonl'),
        join(work, 'state', 'audit.jsonl'),
      );
      expect(reconciled.agree).toBe(true);
      recordFault(
        'agent SIGKILL mid-upload, same command run again',
        'resumed from the held chunks; every statistic committed once; receipts recovered, ledgers reconcile',
      );
    },
  );

  it('over mTLS: a connection dropped mid-upload is retried with backoff and the upload finishes', { timeout: 300_000 }, async () => {
    // This fault runs against an mTLS coordinator (the others use --insecure-loopback): the TLS session is cut too.
    const ca = await createCertificateAuthority('fault test CA');
    const pem = (name: string, text: string, mode = 0o644): string => {
      const path = join(work, name);
      writeFileSync(path, text, { mode });
      return path;
    };
    const server = await issueCertificate(ca, 'coordinator', { hosts: ['localhost', '127.0.0.1'] });
    const tlsOf = async (name: string): Promise<{ caPem: string; certPem: string; keyPem: string }> => {
      const c = await issueCertificate(ca, name);
      return { caPem: ca.certPem, certPem: c.certPem, keyPem: c.keyPem };
    };
    const tlsCoordinator = new CoordinatorProcess(await freePort(), join(work, 'tls-state'), [
      '--tls-ca',
      pem('ca.pem', ca.certPem),
      '--tls-cert',
      pem('coordinator.pem', server.certPem),
      '--tls-key',
      pem('coordinator-key.pem', server.keyPem, 0o600),
    ]);
    await tlsCoordinator.start();
    const creator = connectFederation({ address: `localhost:${tlsCoordinator.port}`, tls: await tlsOf('creator') });
    await creator.createJob(
      JSON.stringify({ id: 'cut', participants: ['org1'], policy: { minRowsPerGroup: 16 } }),
      readFileSync(exampleModel('org0')),
    );
    creator.close();
    const proxy = await TcpProxy.start(tlsCoordinator.port);
    let chunks = 0;
    const retries: string[] = [];
    try {
      const result = await runAgent(
        exampleAgent('org1', { address: proxy.address, tls: await tlsOf('org1') }, 'cut', join(work, 'agents', 'cut', 'org1'), {
          chunkBytes: 16 * 1024,
          onUpload: async () => {
            if (++chunks === 300) {
              await new Promise((r) => setTimeout(r, 200));
              proxy.cut();
            }
          },
          onRetry: (_attempt, error) => retries.push(error.code),
        }),
      );
      expect(proxy.cuts).toBe(1);
      expect(retries).toEqual([ErrorCode.Unavailable]);
      expect(result.receipts).toBe(64);
    } finally {
      await proxy.close();
      await tlsCoordinator.kill('SIGTERM');
    }
    expect(await commitsOf('cut', 'org1', join(work, 'tls-state'))).toHaveLength(64);
    recordFault(
      'agent connection dropped mid-upload (TCP proxy)',
      'UNAVAILABLE retried with backoff and jitter; upload finished; 64 statistics committed once',
    );
  });

  it('a coordinator that accepts connections but never answers gives DEADLINE_EXCEEDED, not a hang', { timeout: 120_000 }, async () => {
    const proxy = await TcpProxy.start(coordinator.port);
    proxy.blackhole = true;
    const started = Date.now();
    try {
      const client = connectFederation({ address: proxy.address, insecureIdentity: 'org0', deadlineSeconds: 1 });
      const error = await client.getJob('anything').catch((e: unknown) => e as GramfuseError);
      client.close();
      expect((error as GramfuseError).code).toBe(ErrorCode.DeadlineExceeded);
      expect((error as GramfuseError).message).toMatch(/did not answer before the call's deadline/);
    } finally {
      await proxy.close();
    }
    expect(Date.now() - started).toBeLessThan(60_000);
    recordFault(
      'coordinator that never answers (TCP proxy swallows bytes)',
      'DEADLINE_EXCEEDED after the per-call deadline and retries, no hang',
    );
  });
});
