// Issue 37 item 7: NATS with the production configuration (deploy/nats-server.conf): TLS with the federation CA, no
// anonymous clients, one NKEY user per role with its subjects only. Each refusal is really attempted here, against a
// real nats-server, and the streams are read back to show that nothing the refused client sent landed.
import { chmod, copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ErrorCode, type GramfuseError } from '../../../shared/index.js';
import {
  AUDIT_STREAM,
  connectNats,
  DEFAULT_SOLVE_QUEUE,
  ensureSolveQueue,
  ensureStreams,
  JOBS_STREAM,
  NatsEventBus,
  SOLVE_CONSUMER,
  SOLVE_STREAM,
  solveSubject,
} from '../../../shared/nats/index.js';
import { issueCertificate } from '../../../shared/security/index.js';
import { runCli } from '../../helpers/cli.js';
import { SecureNats } from '../../helpers/nats-secure.js';

let nats: SecureNats;
beforeAll(async () => {
  nats = await SecureNats.start();
  // The coordinator creates the streams and the solve queue, as at a real start.
  const nc = await connectNats(nats.roles.coordinator.endpoint, { name: 'test coordinator' });
  await ensureSolveQueue(nc, DEFAULT_SOLVE_QUEUE);
  await nc.drain();
});
afterAll(async () => {
  await nats?.stop();
});

const refusal = (promise: Promise<unknown>): Promise<GramfuseError> =>
  promise.then(
    () => {
      throw new Error('expected a refusal');
    },
    (error: unknown) => error as GramfuseError,
  );

/** Messages a stream holds (its state, read with the coordinator's user). */
async function held(stream: string): Promise<number> {
  const nc = await connectNats(nats.roles.coordinator.endpoint, { name: 'test reader' });
  try {
    return (await (await jetstreamManager(nc)).streams.info(stream)).state.messages;
  } finally {
    await nc.drain();
  }
}

describe('NATS with deploy/nats-server.conf (TLS + a user per role)', () => {
  it('refuses an anonymous client, a client without TLS and one that does not know the federation CA', async () => {
    const anonymous = await refusal(connectNats({ url: nats.url, tlsCa: nats.caFile }, { name: 'anonymous' }));
    expect(anonymous.code).toBe(ErrorCode.NotAuthorized);
    expect(anonymous.message).toMatch(/refused this client's credentials/);
    // A bare URL: plaintext and anonymous, as every client was before this issue.
    const bare = await refusal(connectNats(nats.url, { name: 'bare' }));
    expect([ErrorCode.Unavailable, ErrorCode.NotAuthorized]).toContain(bare.code);
    // The right seed but another CA: the server's certificate does not verify.
    const other = await SecureNats.start();
    try {
      const wrongCa = await refusal(
        connectNats({ url: nats.url, tlsCa: other.caFile, creds: nats.roles.observer.seedFile }, { name: 'wrong CA' }),
      );
      expect(wrongCa.code).toBe(ErrorCode.Unavailable);
      expect(wrongCa.message).toMatch(/--nats-tls-ca/);
    } finally {
      await other.stop();
    }
    expect(nats.server.output).toMatch(/authentication error/);
  });

  it('refuses a credentials file or client key that others can read (KEY_FILE_EXPOSED), and a file that is no credential', async () => {
    const exposed = join(nats.dir, 'exposed.nk');
    await copyFile(nats.roles.observer.seedFile, exposed);
    await chmod(exposed, 0o644);
    const error = await refusal(connectNats({ url: nats.url, tlsCa: nats.caFile, creds: exposed }, { name: 'exposed' }));
    expect(error.code).toBe(ErrorCode.KeyFileExposed);
    expect(error.message).toContain(`chmod 600 ${exposed}`);
    const notCreds = join(nats.dir, 'not-creds');
    await writeFile(notCreds, 'hello\n', { mode: 0o600 });
    const bad = await refusal(connectNats({ url: nats.url, tlsCa: nats.caFile, creds: notCreds }, { name: 'bad' }));
    expect(bad.code).toBe(ErrorCode.InvalidArgument);
    expect(bad.message).toMatch(/NKEY user seed/);
  });

  it('an observer reads events but cannot publish events or audit records, nor consume the solve queue', async () => {
    const coordinator = await NatsEventBus.connect(nats.roles.coordinator.endpoint, 'test coordinator');
    const observer = await connectNats(nats.roles.observer.endpoint, { name: 'test observer' });
    try {
      await ensureStreams(observer); // the streams exist: nothing to create
      const events = await held(JOBS_STREAM);
      const audit = await held(AUDIT_STREAM);
      const js = jetstream(observer, { timeout: 2000 });
      const forged = JSON.stringify({ job: 'victim', type: 'state', time: new Date().toISOString(), data: { state: 'failed' } });
      await expect(js.publish('gramfuse.jobs.victim.state', forged)).rejects.toThrow();
      await expect(js.publish('gramfuse.audit.victim.deadbeef', '{"seq":1}')).rejects.toThrow();
      // Core publish (no ack asked): the server drops it; the streams still hold what they held.
      observer.publish('gramfuse.jobs.victim.state', forged);
      observer.publish('gramfuse.audit.victim.deadbeef', '{"seq":1}');
      await observer.flush();
      expect(await held(JOBS_STREAM)).toBe(events);
      expect(await held(AUDIT_STREAM)).toBe(audit);

      // A real task on the queue: the observer may not take it (nor anything else of the solve stream).
      const cnc = await connectNats(nats.roles.coordinator.endpoint, { name: 'test coordinator queue' });
      await jetstream(cnc).publish(solveSubject('victim'), '{"task":"held for the solvers"}');
      await cnc.drain();
      await expect(js.consumers.get(SOLVE_STREAM, SOLVE_CONSUMER)).rejects.toThrow();
      const next = await observer
        .request(`$JS.API.CONSUMER.MSG.NEXT.${SOLVE_STREAM}.${SOLVE_CONSUMER}`, JSON.stringify({ batch: 1, expires: 500_000_000 }), {
          timeout: 1500,
        })
        .then(
          (m) => m.string(),
          (e: unknown) => e as Error,
        );
      expect(next).toBeInstanceOf(Error);
      expect(await held(SOLVE_STREAM)).toBe(1);
      const ordered = await refusal(js.consumers.get(SOLVE_STREAM, { deliver_policy: DeliverPolicy.All }));
      expect(ordered).toBeInstanceOf(Error);
      // Nor delete or purge the audit stream.
      const ojsm = await jetstreamManager(observer, { timeout: 2000 });
      await expect(ojsm.streams.purge(AUDIT_STREAM)).rejects.toThrow();
      await expect(ojsm.streams.delete(AUDIT_STREAM)).rejects.toThrow();
      expect(nats.server.output).toMatch(/Publish Violation.*GRAMFUSE_AUDIT/);

      // What it may do: follow a job's events, stored and live.
      const watcher = await NatsEventBus.connect(nats.roles.observer.endpoint, 'test watcher');
      const seen: string[] = [];
      const stop = await watcher.subscribe('observed', (e) => seen.push(String(e.data.state)), { history: true });
      await coordinator.publish({ job: 'observed', type: 'state', time: new Date().toISOString(), data: { state: 'open' } });
      const until = Date.now() + 5000;
      while (seen.length < 1 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      expect(seen).toEqual(['open']);
      await stop();
      await watcher.close();
    } finally {
      await observer.drain();
      await coordinator.close();
    }
  });

  it('a solver takes solve tasks but cannot publish events or audit records; the coordinator cannot purge the audit stream', async () => {
    const solver = await connectNats(nats.roles.solver.endpoint, { name: 'test solver' });
    const coordinator = await connectNats(nats.roles.coordinator.endpoint, { name: 'test coordinator' });
    const mirror = await connectNats(nats.roles['agent-mirror'].endpoint, { name: 'test mirror' });
    try {
      const js = jetstream(solver, { timeout: 2000 });
      const consumer = await js.consumers.get(SOLVE_STREAM, SOLVE_CONSUMER);
      await jetstream(coordinator).publish(solveSubject('solver-test'), '{"task":1}');
      const taken: string[] = [];
      while (!taken.includes(solveSubject('solver-test'))) {
        const msg = await consumer.next({ expires: 3000 });
        if (msg === null) break;
        taken.push(msg.subject);
        await msg.ackAck();
      }
      expect(taken).toContain(solveSubject('solver-test'));
      const events = await held(JOBS_STREAM);
      await expect(js.publish('gramfuse.jobs.x.state', '{}')).rejects.toThrow();
      await expect(js.publish('gramfuse.audit.x.y', '{}')).rejects.toThrow();
      await expect(js.publish(solveSubject('forged'), '{}')).rejects.toThrow();
      expect(await held(JOBS_STREAM)).toBe(events);

      // The agent mirror publishes audit records, not events.
      const mjs = jetstream(mirror, { timeout: 2000 });
      const audit = await held(AUDIT_STREAM);
      await mjs.publish('gramfuse.audit.mirror-test.cafe', '{"seq":1}');
      expect(await held(AUDIT_STREAM)).toBe(audit + 1);
      await expect(mjs.publish('gramfuse.jobs.mirror-test.state', '{}')).rejects.toThrow();

      // The owners' records on the audit stream are out of the coordinator's reach.
      const cjsm = await jetstreamManager(coordinator, { timeout: 2000 });
      await expect(cjsm.streams.purge(AUDIT_STREAM)).rejects.toThrow();
      await expect(cjsm.streams.delete(AUDIT_STREAM)).rejects.toThrow();
      expect(await held(AUDIT_STREAM)).toBe(audit + 1);
    } finally {
      await Promise.all([solver.drain(), coordinator.drain(), mirror.drain()]);
    }
  });
});

describe('an observer that sees a solver’s delivery cannot terminate, nak or ack it', () => {
  it('the ack subject snooped from _INBOX.> is refused: the task stays with the solvers', async () => {
    const coordinator = await connectNats(nats.roles.coordinator.endpoint, { name: 'test coordinator' });
    const solver = await connectNats(nats.roles.solver.endpoint, { name: 'test solver' });
    const observer = await connectNats(nats.roles.observer.endpoint, { name: 'test snooper' });
    try {
      // Empty the queue of the earlier tests' tasks.
      const consumer = await jetstream(solver).consumers.get(SOLVE_STREAM, SOLVE_CONSUMER);
      for (let m = await consumer.next({ expires: 1000 }); m !== null; m = await consumer.next({ expires: 1000 })) await m.ackAck();
      // The observer may subscribe to every reply inbox: it sees the delivery and its ack subject…
      const snooped: string[] = [];
      const sub = observer.subscribe('_INBOX.>', {
        callback: (error, msg) => {
          if (error === null && msg.reply?.startsWith(`$JS.ACK.${SOLVE_STREAM}.`)) snooped.push(msg.reply);
        },
      });
      await observer.flush();
      await jetstream(coordinator).publish(solveSubject('snooped'), '{"task":"the victim group"}');
      const first = await consumer.next({ expires: 3000 });
      expect(first?.subject).toBe(solveSubject('snooped'));
      const deadline = Date.now() + 3000;
      while (snooped.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(snooped).toHaveLength(1);
      // …and tries to end it for everyone (+TERM), to ack it (drop the group) and to nak it: every publish is refused.
      for (const verb of ['+TERM', '+ACK', '-NAK']) observer.publish(snooped[0]!, verb);
      await observer.flush();
      // The server logs the violation on its stderr, which reaches this process through a pipe: wait for the line.
      const logged = Date.now() + 10_000;
      while (!nats.server.output.includes(`Subject "${snooped[0]!}"`) && Date.now() < logged) await new Promise((r) => setTimeout(r, 20));
      expect(nats.server.output).toContain(`Subject "${snooped[0]!}"`);
      // The solver naks it as a worker may; it comes back (a term or an ack would have removed it).
      first!.nak();
      const again = await consumer.next({ expires: 5000 });
      expect(again?.subject).toBe(solveSubject('snooped'));
      expect(again?.info.deliveryCount).toBe(2);
      await again!.ackAck();
      sub.unsubscribe();
    } finally {
      await Promise.all([coordinator.drain(), solver.drain(), observer.drain()]);
    }
  });
});

describe('the other ways in: a client certificate (verify: true) and user/password', () => {
  let strict: SecureNats;
  beforeAll(async () => {
    strict = await SecureNats.start((conf) => {
      const changed = conf
        .replace('verify: false', 'verify: true')
        .replace(
          '{ nkey: $GRAMFUSE_NATS_OBSERVER_NKEY, permissions: $OBSERVER }',
          '{ nkey: $GRAMFUSE_NATS_OBSERVER_NKEY, permissions: $OBSERVER }\n      { user: auditor, password: "s3cret-auditor", permissions: $OBSERVER }',
        );
      expect(changed).toContain('verify: true');
      expect(changed).toContain('user: auditor');
      return changed;
    });
  });
  afterAll(async () => {
    await strict?.stop();
  });

  it('a server that verifies clients admits one with a federation certificate and refuses one without; the key must be 0600', async () => {
    const observer = strict.roles.observer;
    const without = await refusal(connectNats(observer.endpoint, { name: 'no client certificate' }));
    expect([ErrorCode.Unavailable, ErrorCode.NotAuthorized]).toContain(without.code);
    const client = await issueCertificate(strict.ca, 'auditor');
    const certFile = join(strict.dir, 'auditor.pem');
    const keyFile = join(strict.dir, 'auditor-key.pem');
    await writeFile(certFile, client.certPem);
    await writeFile(keyFile, client.keyPem, { mode: 0o600 });
    const nc = await connectNats({ ...observer.endpoint, tlsCert: certFile, tlsKey: keyFile }, { name: 'with client certificate' });
    expect(nc.info?.tls_required).toBe(true); // connected, over TLS, with the client certificate
    await nc.drain();
    await chmod(keyFile, 0o640);
    const exposed = await refusal(connectNats({ ...observer.endpoint, tlsCert: certFile, tlsKey: keyFile }, { name: 'exposed key' }));
    expect(exposed.code).toBe(ErrorCode.KeyFileExposed);
    const half = await refusal(connectNats({ ...observer.endpoint, tlsCert: certFile }, { name: 'cert without key' }));
    expect(half.code).toBe(ErrorCode.InvalidArgument);
  });

  it('`--nats-user` takes its password from GRAMFUSE_NATS_PASSWORD; a wrong one is NOT_AUTHORIZED', { timeout: 60_000 }, async () => {
    await chmod(join(strict.dir, 'auditor-key.pem'), 0o600);
    const coordinator = await connectNats(
      { ...strict.roles.coordinator.endpoint, tlsCert: join(strict.dir, 'auditor.pem'), tlsKey: join(strict.dir, 'auditor-key.pem') },
      { name: 'coordinator' },
    );
    await ensureStreams(coordinator);
    await coordinator.drain();
    const flags = [
      '--nats',
      strict.url,
      '--nats-tls-ca',
      strict.caFile,
      '--nats-tls-cert',
      join(strict.dir, 'auditor.pem'),
      '--nats-tls-key',
      join(strict.dir, 'auditor-key.pem'),
      '--nats-user',
      'auditor',
    ];
    // Connected and following: the watch ends only at its --timeout (DEADLINE_EXCEEDED), not at the login.
    const right = await runCli(['job', 'watch', 'nothing', ...flags, '--timeout', '2'], {
      env: { GRAMFUSE_NATS_PASSWORD: 's3cret-auditor' },
    });
    expect(right.stderr).toMatch(/DEADLINE_EXCEEDED: job nothing: not finished after 2 s/);
    const wrong = await runCli(['job', 'watch', 'nothing', ...flags, '--timeout', '2'], { env: { GRAMFUSE_NATS_PASSWORD: 'guess' } });
    expect(wrong.code).toBe(41);
    expect(wrong.stderr).toMatch(/NOT_AUTHORIZED: NATS at \S+ refused this client's credentials/);
    const none = await runCli(['job', 'watch', 'nothing', ...flags, '--timeout', '2'], { env: { GRAMFUSE_NATS_PASSWORD: '' } });
    expect(none.stderr).toMatch(/INVALID_ARGUMENT: NATS user auditor has no password: set GRAMFUSE_NATS_PASSWORD/);
    // Credentials without a server are a mistake, not something to ignore.
    const stray = await runCli([
      'job',
      'watch',
      'nothing',
      '--coordinator',
      '127.0.0.1:1',
      '--insecure-loopback',
      '--identity',
      'x',
      '--nats-creds',
      strict.roles.observer.seedFile,
      '--timeout',
      '2',
    ]);
    expect(stray.code).toBe(2);
    expect(stray.stderr).toMatch(/INVALID_ARGUMENT: --nats-creds without --nats/);
  });
});
