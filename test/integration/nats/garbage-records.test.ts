// Issue 37 item 7: a message on the events or audit subjects that is not a record (not JSON, not the schema, filed
// under another job's subject) used to throw out of JSON.parse inside the subscription: `job watch --nats` died for
// good and the dashboard's live feed went silent. Each is now skipped and reported (INVALID_DATA), and both go on.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { get, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { jetstream } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startDashboard } from '../../../dashboard/index.js';
import { FileLedger } from '../../../shared/audit/index.js';
import type { JobEvent } from '../../../shared/events/index.js';
import { AuditPublisher, connectNats, ensureStreams, NatsEventBus } from '../../../shared/nats/index.js';
import { generateSigningKeys } from '../../../shared/security/index.js';
import { CLI, runCli } from '../../helpers/cli.js';
import { freePort, NatsServer } from '../../helpers/nats-server.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-nats-garbage-'));
let nats: NatsServer;
beforeAll(async () => {
  nats = await NatsServer.start();
});
afterAll(async () => {
  await nats?.stop();
  rmSync(work, { recursive: true, force: true });
});

const event = (job: string, state: string): JobEvent => ({ job, type: 'state', time: new Date().toISOString(), data: { state } });

/** Publishes what a hostile or broken publisher would: garbage on the events and audit subjects of `job`. */
async function publishGarbage(job: string): Promise<void> {
  const nc = await connectNats(nats.url, { name: 'garbage' });
  await ensureStreams(nc);
  const js = jetstream(nc);
  await js.publish(`gramfuse.jobs.${job}.state`, '{"job": "not closed');
  await js.publish(`gramfuse.jobs.${job}.state`, new Uint8Array([0xff, 0xfe, 0x00]));
  await js.publish(`gramfuse.jobs.${job}.state`, JSON.stringify({ job, type: 'state', data: 'no time' }));
  // A well-formed event of another job filed under this one's subject.
  await js.publish(`gramfuse.jobs.${job}.state`, JSON.stringify(event('someone-else', 'failed')));
  await js.publish(`gramfuse.audit.${job}.deadbeef`, 'not a record');
  await nc.drain();
}

const until = async (what: () => boolean, ms: number, why: () => string): Promise<void> => {
  const deadline = Date.now() + ms;
  while (!what()) {
    if (Date.now() > deadline) throw new Error(why());
    await new Promise((r) => setTimeout(r, 50));
  }
};

describe('garbage on the NATS subjects is skipped and reported, never fatal', () => {
  it('`gramfuse job watch --nats` reports each skipped record and still follows the job to done', { timeout: 60_000 }, async () => {
    const job = 'garbage-watch';
    await publishGarbage(job); // stored before the watch starts: replayed from the stream
    const bus = await NatsEventBus.connect(nats.url, 'test coordinator');
    await bus.publish(event(job, 'collecting'));
    const child: ChildProcess = spawn(process.execPath, [CLI, 'job', 'watch', job, '--nats', nats.url, '--json', '--timeout', '50'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exited = new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? -1)));
    try {
      await until(
        () => stdout.includes('"collecting"'),
        20_000,
        () => `watch never printed the first event:\n${stdout}\n${stderr}`,
      );
      await publishGarbage(job); // and live, while it follows
      await bus.publish(event(job, 'done'));
      const code = await exited;
      expect(code, stderr).toBe(0);
    } finally {
      child.kill();
      await bus.close();
    }
    const events = stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as JobEvent);
    expect(events.map((e) => e.data.state)).toEqual(['collecting', 'done']);
    expect(events.every((e) => e.job === job)).toBe(true); // the other job's event filed here was not taken for this one's
    const skipped = stderr.split('\n').filter((line) => line.startsWith('skipped a record: INVALID_DATA:'));
    expect(skipped).toHaveLength(8); // 4 bad events, stored before and published live
    expect(stderr).toMatch(
      /the message on gramfuse\.jobs\.garbage-watch\.state \(GRAMFUSE_JOBS seq \d+\) is not a gramfuse job event \(not UTF-8 JSON/,
    );
    expect(stderr).toMatch(/time: /);
    expect(stderr).toMatch(/it says job "someone-else"/);
  });

  it(
    'the dashboard keeps its live feed, reports the skipped records, and shows the audit page; audit verify lists them',
    { timeout: 60_000 },
    async () => {
      const job = 'garbage-dashboard';
      // One real ledger on the audit stream besides the garbage.
      const ledger = await FileLedger.open(join(work, 'audit.jsonl'), generateSigningKeys(), 'writer');
      await ledger.append('job.created', job, { note: 'real' });
      const publisher = await AuditPublisher.start(ledger, nats.url, 'test');
      expect(await publisher.flush()).toBe(0);
      await publisher.close();

      const log: string[] = [];
      const dashboard = await startDashboard({
        coordinator: { address: `127.0.0.1:${await freePort()}`, insecureIdentity: 'auditor', deadlineSeconds: 2 },
        nats: nats.url,
        listen: '127.0.0.1:0',
        log: (line) => log.push(line),
      });
      const bus = await NatsEventBus.connect(nats.url, 'test coordinator');
      let feed = '';
      let response: IncomingMessage | undefined;
      try {
        await new Promise<void>((resolve, reject) => {
          get(new URL('events', dashboard.url), (res) => {
            response = res;
            res.setEncoding('utf8').on('data', (c: string) => (feed += c));
            resolve();
          }).on('error', reject);
        });
        await until(
          () => feed.includes('gramfuse dashboard events'),
          5000,
          () => `no event stream: ${feed}`,
        );
        await publishGarbage(job);
        await bus.publish(event(job, 'done'));
        await until(
          () => feed.includes(`"job":"${job}"`),
          10_000,
          () => `the live feed went silent after the garbage:\n${feed}\n${log.join('\n')}`,
        );
        expect(feed.match(/event: skipped/g)).toHaveLength(4);
        expect(feed).toMatch(/event: job\ndata: \{"job":"garbage-dashboard","type":"state"\}/);
        expect(log.filter((l) => l.startsWith('skipped a record: INVALID_DATA'))).toHaveLength(4);

        // The audit page reads GRAMFUSE_AUDIT with the garbage on it: served, the real ledger shown, the garbage reported.
        const page = await new Promise<{ status: number; body: string }>((resolve, reject) => {
          get(new URL('audit', dashboard.url), (res) => {
            let body = '';
            res.setEncoding('utf8').on('data', (c: string) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          }).on('error', reject);
        });
        expect(page.status).toBe(200);
        expect(page.body).toContain(`GRAMFUSE_AUDIT writer ${ledger.keyId}`);
        expect(
          log.some((l) => /GRAMFUSE_AUDIT seq \d+ on gramfuse\.audit\.garbage-dashboard\.deadbeef is not an audit record/.test(l)),
        ).toBe(true);
      } finally {
        response?.destroy();
        await bus.close();
        await dashboard.close();
      }

      const verify = await runCli(['audit', 'verify', '--nats', nats.url]);
      expect(verify.code, verify.stderr).toBe(0);
      expect(verify.stdout).toMatch(new RegExp(`writer ${ledger.keyId} \\(writer\\): 2 records.*chain and signatures verify`));
      expect(verify.stdout).toMatch(/skipped: INVALID_DATA: GRAMFUSE_AUDIT seq \d+ on gramfuse\.audit\.garbage-dashboard\.deadbeef/);
    },
  );
});
