import { readFileSync, rmSync, mkdtempSync, writeFileSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runAgent } from '../../../agent/index.js';
import { type ClientTls, connectFederation } from '../../../client/index.js';
import { startCoordinatorServer } from '../../../coordinator/index.js';
import { packageVersion } from '../../../shared/index.js';
import { FileLedger, verifyLedgerText } from '../../../shared/audit/index.js';
import { AuditPublisher, readAuditStream } from '../../../shared/nats/index.js';
import {
  type CertificateBundle,
  createCertificateAuthority,
  generateSigningKeys,
  issueCertificate,
} from '../../../shared/security/index.js';
import { runCli } from '../../helpers/cli.js';
import { EXAMPLE_DATA, exampleModel, EXAMPLE_TOKENIZER } from '../../helpers/examples.js';
import { NatsServer } from '../../helpers/nats-server.js';
import { recordFault } from '../../helpers/reliability.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-nats-audit-'));
let nats: NatsServer;
beforeAll(async () => {
  nats = await NatsServer.start();
});
afterAll(async () => {
  await nats.stop();
  rmSync(work, { recursive: true, force: true });
});

/** The stream's records of the writer of `ledger`, as text: must equal the file byte for byte. */
async function streamText(ledger: FileLedger): Promise<string> {
  const found = (await readAuditStream(nats.url)).find((l) => l.writer === ledger.keyId);
  return found?.text ?? '';
}

describe('audit records on JetStream (real nats-server)', () => {
  it('records written while NATS is down reach the stream when it returns, exactly once, and verify like the file', async () => {
    const ledger = await FileLedger.open(join(work, 'a.jsonl'), generateSigningKeys(), 'writer-a');
    const publisher = await AuditPublisher.start(ledger, nats.url, 'test');
    for (let i = 0; i < 5; i++) await ledger.append('statistic.committed', 'job.one', { statistic: `s${i}`, bytes: i });
    expect(await publisher.flush()).toBe(0);
    expect(await streamText(ledger)).toBe(await readFile(ledger.path, 'utf8'));

    await nats.kill();
    for (let i = 5; i < 12; i++) await ledger.append('receipt.issued', i % 2 === 0 ? 'job.one' : 'job-two', { statistic: `s${i}` });
    expect(publisher.backlog).toBeGreaterThan(0); // the file has them; NATS does not yet
    await nats.start();
    expect(await publisher.flush(20_000)).toBe(0);
    await publisher.close();
    const file = await readFile(ledger.path, 'utf8');
    expect(await streamText(ledger)).toBe(file);
    expect(verifyLedgerText(await streamText(ledger), 'stream').records).toHaveLength(13);

    // A publisher that lost its progress marker (a crash between the ack and the marker) duplicates nothing.
    await rm(`${ledger.path}.nats.json`);
    const again = await AuditPublisher.start(ledger, nats.url, 'test');
    await ledger.append('job.failed', 'job-two', { code: 'X' });
    expect(await again.flush()).toBe(0);
    await again.close();
    expect(await streamText(ledger)).toBe(await readFile(ledger.path, 'utf8'));
    expect((await streamText(ledger)).split('\n').length - 1).toBe(14);

    const verified = await runCli(['audit', 'verify', '--nats', nats.url]);
    expect(verified.code, verified.stderr).toBe(0);
    expect(verified.stdout).toContain(`writer ${ledger.keyId} (writer-a): 14 records, jobs job-two, job.one; chain and signatures verify`);
    recordFault(
      'nats-server SIGKILL while audit records are written; publisher progress marker lost',
      'records reached the stream after restart, in order, exactly once; stream == file byte for byte',
    );
  });

  it('appends racing a NATS kill and restart lose and duplicate nothing', async () => {
    const ledger = await FileLedger.open(join(work, 'b.jsonl'), generateSigningKeys(), 'writer-b');
    const publisher = await AuditPublisher.start(ledger, nats.url, 'test');
    const writing = (async () => {
      for (let i = 0; i < 60; i++) {
        await ledger.append('statistic.committed', `job${i % 3}`, { i });
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    await new Promise((r) => setTimeout(r, 150));
    await nats.kill();
    await new Promise((r) => setTimeout(r, 300));
    await nats.start();
    await writing;
    expect(await publisher.flush(30_000)).toBe(0);
    await publisher.close();
    const text = await streamText(ledger);
    expect(text).toBe(await readFile(ledger.path, 'utf8'));
    expect(verifyLedgerText(text, 'stream').records).toHaveLength(61);
    recordFault('nats-server SIGKILL and restart during continuous appends', 'no record lost or duplicated; stream verifies');
  });
});

describe('a federated job with --nats', () => {
  const orgs = ['org0', 'org1'];
  let ca: CertificateBundle;
  const certs = new Map<string, CertificateBundle>();
  const tlsOf = (name: string): ClientTls => ({ caPem: ca.certPem, certPem: certs.get(name)!.certPem, keyPem: certs.get(name)!.keyPem });

  it(
    'keeps every audit record of both sides through a NATS restart, reconciles, and job watch follows it on NATS',
    { timeout: 300_000 },
    async () => {
      ca = await createCertificateAuthority('nats test CA');
      const serverCert = await issueCertificate(ca, 'coordinator', { hosts: ['localhost', '127.0.0.1'] });
      for (const name of ['creator', ...orgs]) certs.set(name, await issueCertificate(ca, name));
      const logs: string[] = [];
      await using server = await startCoordinatorServer({
        stateDir: join(work, 'coordinator'),
        listen: '127.0.0.1:0',
        tls: { caPem: ca.certPem, certPem: serverCert.certPem, keyPem: serverCert.keyPem },
        nats: nats.url,
        creators: ['creator'],
        log: (line) => logs.push(line),
      });
      const creator = connectFederation({ address: `localhost:${server.port}`, tls: tlsOf('creator') });
      await creator.createJob(JSON.stringify({ id: 'nats.job', participants: orgs }), readFileSync(exampleModel('org0')));
      const agent = (org: string): Parameters<typeof runAgent>[0] => ({
        connect: { address: `localhost:${server.port}`, tls: tlsOf(org) },
        jobId: 'nats.job',
        workDir: join(work, 'agents', org),
        yes: true,
        model: exampleModel(org),
        data: EXAMPLE_DATA(org),
        tokenizer: EXAMPLE_TOKENIZER,
        dtype: 'float64',
        maxLength: 128,
        batchSize: 32,
        maxExamples: 300,
        seed: 1,
        textField: 'text',
        device: 'cpu',
        toolVersion: packageVersion(),
        nats: nats.url,
      });
      const first = await runAgent(agent('org0'));
      expect(first.auditBacklog).toBe(0);
      // NATS goes down: org1's statistics are committed and recorded in the files only…
      await nats.kill();
      const second = await runAgent(agent('org1'));
      expect(second.auditBacklog).toBeGreaterThan(0);
      const final = await creator.watch('nats.job', () => undefined);
      expect(final.state).toBe('done');
      creator.close();
      // …and reach the stream once NATS is back (the agent's backlog at its next run).
      await nats.start();
      const resumed = await runCli(['audit', 'publish', '--ledger', second.ledger, '--nats', nats.url]);
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(resumed.stdout).toMatch(
        /records are in stream GRAMFUSE_AUDIT on nats:\/\/127\.0\.0\.1:\d+ \(checked against the stream, record by record\)/,
      );
      await server.close();

      const stream = await readAuditStream(nats.url, 'nats.job');
      const files = [join(work, 'coordinator', 'audit.jsonl'), first.ledger, second.ledger];
      for (const file of files) {
        const text = await readFile(file, 'utf8');
        const writer = JSON.parse(text.split('\n')[0]!).key as string;
        expect(stream.find((l) => l.writer === writer)?.text, file).toBe(text);
      }
      expect(logs.some((l) => /wait for NATS/.test(l))).toBe(true);

      for (const org of orgs) {
        const reconciled = await runCli([
          'audit',
          'reconcile',
          '--agent-ledger',
          join(work, 'agents', org, 'audit.jsonl'),
          '--coordinator-ledger',
          files[0]!,
        ]);
        expect(reconciled.code, reconciled.stderr).toBe(0);
        expect(reconciled.stdout).toMatch(new RegExp(`^${org}: the agent's and the coordinator's ledgers agree: 64 statistics in 1 job`));
      }
      // A coordinator ledger with one record changed no longer reconciles (nor verifies).
      const tampered = join(work, 'tampered.jsonl');
      writeFileSync(tampered, readFileSync(files[0]!, 'utf8').replace(/"bytes":131072/, '"bytes":131073'));
      const bad = await runCli(['audit', 'reconcile', '--agent-ledger', first.ledger, '--coordinator-ledger', tampered]);
      expect(bad.code).toBe(50);
      expect(bad.stderr).toMatch(/AUDIT_INVALID: .*tampered.jsonl: record at line \d+/);

      const watch = await runCli(['job', 'watch', 'nats.job', '--nats', nats.url, '--json', '--timeout', '30']);
      expect(watch.code, watch.stderr).toBe(0);
      const events = watch.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { type: string; data: Record<string, unknown> });
      expect(events.filter((e) => e.type === 'state').map((e) => e.data.state)).toEqual(['open', 'collecting', 'solving', 'done']);
      expect(events.some((e) => e.type === 'joined' && e.data.owner === 'org0')).toBe(true);
      expect(events.some((e) => e.type === 'solve')).toBe(true);
      recordFault(
        'nats-server down while an owner uploads and the job solves',
        "both sides' records reached the stream exactly once after restart; job events replayed in order; ledgers reconcile",
      );
    },
  );
});
