// The distributed solve (issue #17): a coordinator started with --solvers nats publishes one task per Gram group on
// the JetStream work queue of a real nats-server; real `gramfuse solver serve` processes pull them, fetch the sums
// over gRPC, solve and submit. The merged model must be byte-identical to the in-process solve's, through a worker
// killed mid-solve, a worker that answers wrongly, and a coordinator killed while tasks are in flight.
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { jetstream, type JsMsg } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runAgent } from '../../agent/index.js';
import { connectFederation } from '../../client/index.js';
import type { JobEvent } from '../../shared/events/index.js';
import { ErrorCode, type GramfuseError } from '../../shared/index.js';
import type { MergeReport } from '../../shared/merge/index.js';
import { NatsEventBus, parseSolveTask, SOLVE_CONSUMER, SOLVE_STREAM } from '../../shared/nats/index.js';
import { exampleAgent } from '../helpers/agent-options.js';
import { runCli } from '../helpers/cli.js';
import { CoordinatorProcess } from '../helpers/coordinator-process.js';
import { exampleModel } from '../helpers/examples.js';
import { freePort, NatsServer } from '../helpers/nats-server.js';
import { recordFault } from '../helpers/reliability.js';
import { SolverProcess } from '../helpers/solver-process.js';

const orgs = ['org0', 'org1'];
const JOB = 'fuse';
/** The example model's Gram groups (2 encoder layers × 4, the pooler, the classifier). */
const GROUPS = 10;
const work = mkdtempSync(join(tmpdir(), 'gramfuse-solve-distributed-'));
let baseline: { sha256: string; report: MergeReport };

const creator = (address: string) => connectFederation({ address, insecureIdentity: 'creator', deadlineSeconds: 10 });

/** Creates the job and uploads both owners' statistics (the baseline's bundles after the first run). */
async function createAndUpload(coordinator: CoordinatorProcess, name: string): Promise<void> {
  const client = creator(coordinator.address);
  await client.createJob(
    JSON.stringify({ id: JOB, participants: orgs, policy: { minRowsPerGroup: 16 } }),
    readFileSync(exampleModel('org0')),
  );
  client.close();
  await Promise.all(
    orgs.map(async (org) => {
      const workDir = join(work, name, 'agents', org);
      if (name !== 'baseline')
        cpSync(join(work, 'baseline', 'agents', org, JOB, 'bundle'), join(workDir, JOB, 'bundle'), { recursive: true });
      await runAgent(
        exampleAgent(org, { address: coordinator.address, insecureIdentity: org, deadlineSeconds: 10 }, JOB, workDir, { threads: 1 }),
      );
    }),
  );
}

/** Waits for the job to be done (through coordinator restarts) and returns its merged model's digest and report. */
async function result(coordinator: CoordinatorProcess, timeoutMs = 180_000): Promise<{ sha256: string; report: MergeReport }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (Date.now() > deadline) throw new Error(`job not done in time:\n${coordinator.log}`);
    const client = creator(coordinator.address);
    try {
      const status = await client.getJob(JOB);
      if (status.state === 'failed') throw new Error(`job failed: ${status.failureCode}: ${status.failureMessage}\n${coordinator.log}`);
      if (status.state === 'done') {
        const model = await client.download(JOB, 'merged.onnx');
        const report = JSON.parse((await client.download(JOB, 'report.json')).toString('utf8')) as MergeReport;
        expect(createHash('sha256').update(model).digest('hex')).toBe(status.resultSha256);
        return { sha256: status.resultSha256, report };
      }
    } catch (error) {
      if ((error as Error).message.startsWith('job failed')) throw error;
    } finally {
      client.close();
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** A coordinator that hands its solves to solver workers over `nats`; AckWait 2 s so a lost worker's task returns fast. */
async function distributedCoordinator(name: string, nats: NatsServer, failpoint?: string): Promise<CoordinatorProcess> {
  const coordinator = new CoordinatorProcess(await freePort(), join(work, name, 'state'));
  await coordinator.start(failpoint, distributedArgs(nats));
  return coordinator;
}
const distributedArgs = (nats: NatsServer): string[] => [
  '--nats',
  nats.url,
  '--solvers',
  'nats',
  '--solver-identities',
  'solver-a,solver-b,solver-c,solver-bad',
  '--solve-ack-wait',
  '2',
  '--solve-max-deliver',
  '10',
];

/** Lines `job fuse: group G committed, solved by W` of a coordinator's log: group → workers that committed it. */
function commits(log: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const match of log.matchAll(/job fuse: group (\S+) committed, solved by (\S+)/g))
    out.set(match[1]!, [...(out.get(match[1]!) ?? []), match[2]!]);
  return out;
}

/** `promise`, or a failure with `why()` after `ms`. */
async function within<T>(promise: Promise<T>, ms: number, why: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(why())), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

const running: { stop(): Promise<void> }[] = [];
afterAll(async () => {
  for (const r of running.reverse()) await r.stop().catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
});

beforeAll(async () => {
  // The in-process solve of the same statistics: what every distributed run must reproduce byte for byte.
  const coordinator = new CoordinatorProcess(await freePort(), join(work, 'baseline', 'state'));
  await coordinator.start();
  try {
    await createAndUpload(coordinator, 'baseline');
    baseline = await result(coordinator);
  } finally {
    await coordinator.kill('SIGTERM');
  }
  expect(baseline.report.layers).toHaveLength(GROUPS);
}, 300_000);

describe('distributed solve over a NATS JetStream work queue', () => {
  it(
    '3 workers solve a 10-group job: the merged model is the in-process solve’s, each group committed once',
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      const coordinator = await distributedCoordinator('three', nats);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      const workers = ['solver-a', 'solver-b', 'solver-c'].map((w) => new SolverProcess(w, coordinator.address, nats.url));
      for (const w of workers) running.push(w);
      await Promise.all(workers.map((w) => w.ready()));
      await createAndUpload(coordinator, 'three');
      const { sha256, report } = await result(coordinator);
      expect(sha256).toBe(baseline.sha256);
      // Every group was solved by a worker, and committed exactly once.
      const committed = commits(coordinator.log);
      expect(committed.size).toBe(GROUPS);
      for (const by of committed.values()) expect(by).toHaveLength(1);
      for (const layer of report.layers) expect(['solver-a', 'solver-b', 'solver-c']).toContain(layer.solvedBy);
      // The coordinator's own residual check is in the report: far below the tolerance on these well-posed groups.
      for (const layer of report.layers) expect(layer.relativeResidual).toBeLessThan(1e-9);
      expect(coordinator.log).toMatch(/job fuse: 10 solve task\(s\) on GRAMFUSE_SOLVE/);
      // The events bus carried each group's progress and the worker holding it (what `job status` shows while solving).
      const bus = await NatsEventBus.connect(nats.url, 'gramfuse test');
      const seen: JobEvent[] = [];
      const unsubscribe = await bus.subscribe(JOB, (event) => seen.push(event), { history: true });
      const until = Date.now() + 20_000;
      while (!seen.some((e) => e.type === 'result') && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      await unsubscribe();
      await bus.close();
      const tasks = seen.filter((e) => e.type === 'solve' && typeof e.data.state === 'string');
      for (const state of ['queued', 'fetching', 'solving', 'checking', 'committed'])
        expect(tasks.some((e) => e.data.state === state)).toBe(true);
      const committedEvents = tasks.filter((e) => e.data.state === 'committed');
      expect(new Set(committedEvents.map((e) => e.data.item)).size).toBe(GROUPS);
      for (const e of committedEvents) expect(['solver-a', 'solver-b', 'solver-c']).toContain(e.data.worker);
      expect(Math.max(...committedEvents.map((e) => Number(e.data.done)))).toBe(GROUPS);
      // Only listed solver identities may fetch a group's sums: an owner may not.
      const owner = connectFederation({ address: coordinator.address, insecureIdentity: 'org0', deadlineSeconds: 10 });
      const refused = (await owner
        .fetchSolveInput({ jobId: JOB, group: report.layers[0]!.group, part: 'gram', sha256: '0'.repeat(64), bytes: 8 })
        .catch((e: unknown) => e)) as GramfuseError;
      owner.close();
      expect(refused.code).toBe(ErrorCode.NotAuthorized);
      expect(refused.message).toMatch(/org0 is not a solver of this coordinator/);
      for (const w of workers) await w.stop();
      // The same job again (a fresh coordinator, the same id and the same sums) on the same stream within its
      // duplicate window: its tasks are new messages, not de-duplicated away as the first job's.
      await coordinator.kill('SIGTERM');
      const again = await distributedCoordinator('three-again', nats);
      running.push({ stop: () => again.kill('SIGTERM') });
      const worker = new SolverProcess('solver-a', again.address, nats.url);
      running.push(worker);
      await worker.ready();
      await createAndUpload(again, 'three-again');
      expect((await result(again, 120_000)).sha256).toBe(baseline.sha256);
      await worker.stop();
    },
  );

  it(
    'a worker SIGKILLed mid-solve: its task is redelivered after AckWait, the job completes with the same model',
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      const coordinator = await distributedCoordinator('worker-kill', nats);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      // The first worker kills itself once it has fetched a group's sums and starts solving.
      const doomed = new SolverProcess('solver-a', coordinator.address, nats.url, { GRAMFUSE_FAILPOINT: 'solver.solve:1' });
      running.push(doomed);
      await doomed.ready();
      await createAndUpload(coordinator, 'worker-kill');
      await within(doomed.exited, 120_000, () => `the worker did not reach its failpoint:\n${doomed.log}\n${coordinator.log}`);
      expect(doomed.exit).toBe('SIGKILL');
      const taken = /job fuse, group (\S+) \(/.exec(doomed.log)![1]!;
      // `job status` shows which worker holds which group: the dead worker still holds its group until AckWait passes.
      const status = await runCli([
        'job',
        'status',
        JOB,
        '--coordinator',
        coordinator.address,
        '--insecure-loopback',
        '--identity',
        'creator',
        '--json',
      ]);
      expect(status.code).toBe(0);
      const view = JSON.parse(status.stdout) as { state: string; solveGroups: { group: string; state: string; worker: string }[] };
      expect(view.state).toBe('solving');
      expect(view.solveGroups).toHaveLength(GROUPS);
      expect(view.solveGroups.find((g) => g.group === taken)).toMatchObject({ state: 'solving', worker: 'solver-a' });
      expect(view.solveGroups.filter((g) => g.state === 'queued').length).toBe(GROUPS - 1);
      const text = await runCli([
        'job',
        'status',
        JOB,
        '--coordinator',
        coordinator.address,
        '--insecure-loopback',
        '--identity',
        'creator',
      ]);
      expect(text.stdout).toContain(`solve: 0/${GROUPS} groups committed`);
      expect(text.stdout).toContain(`  ${taken}: solving (solver-a)`);
      const healthy = new SolverProcess('solver-b', coordinator.address, nats.url);
      running.push(healthy);
      const { sha256, report } = await result(coordinator);
      expect(sha256).toBe(baseline.sha256);
      // The killed worker's group came back to the healthy one as a redelivery.
      expect(healthy.log).toMatch(new RegExp(`group ${taken.replaceAll('.', '\\.')} \\(n \\d+, \\d+ right-hand sides, delivery [2-9]\\)`));
      expect(report.layers.every((l) => l.solvedBy === 'solver-b')).toBe(true);
      recordFault(
        'solver worker SIGKILL mid-solve (distributed solve)',
        'task redelivered after AckWait to another worker; job finished with the in-process solve’s merged model (SHA-256 equal)',
      );
      await healthy.stop();
    },
  );

  it(
    'a worker whose solve thread dies reports the error, the task comes back, and the restarted thread solves it',
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      const coordinator = await distributedCoordinator('thread-dies', nats);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      const worker = new SolverProcess('solver-a', coordinator.address, nats.url, { GRAMFUSE_FAULT: 'solver.thread-dies:1' });
      running.push(worker);
      await worker.ready();
      await createAndUpload(coordinator, 'thread-dies');
      const { sha256 } = await result(coordinator, 120_000).catch((e: unknown) => {
        throw new Error(`${(e as Error).message.slice(0, 3000)}\nWORKER:\n${worker.log.slice(0, 4000)}`);
      });
      expect(sha256).toBe(baseline.sha256);
      expect(worker.log).toMatch(/could not solve: RUNTIME_FAILED: the solve thread died/);
      expect(coordinator.log).toMatch(/solver-a could not solve \(delivery 1, its word\): RUNTIME_FAILED: the solve thread died/);
      recordFault(
        'a solver worker’s solve thread dies mid-task (distributed solve)',
        'RUNTIME_FAILED reported, the task naked and redelivered, solved by a new thread; same merged model',
      );
      await worker.stop();
    },
  );

  it(
    'a worker that returns wrong solutions is refused by the residual check; the task is solved elsewhere',
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      const coordinator = await distributedCoordinator('wrong', nats);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      const bad = new SolverProcess('solver-bad', coordinator.address, nats.url, { GRAMFUSE_FAULT: 'solver.wrong-solution' });
      running.push(bad);
      await bad.ready();
      await createAndUpload(coordinator, 'wrong');
      // Wait for the first refusal before a good worker joins, so the bad one certainly answered.
      const deadline = Date.now() + 120_000;
      while (!coordinator.log.includes("solver-bad's solution rejected")) {
        if (Date.now() > deadline) throw new Error(`no rejection:\n${coordinator.log}\n${bad.log}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(coordinator.log).toMatch(
        /solver-bad's solution rejected: relative residual \S+ is above the tolerance \S+ \(64·n·ε·κ̂ at the coordinator's condition estimate \S+, at most 1e-6\)/,
      );
      const good = new SolverProcess('solver-a', coordinator.address, nats.url);
      running.push(good);
      const { sha256, report } = await result(coordinator);
      expect(sha256).toBe(baseline.sha256);
      expect(report.layers.map((l) => l.solvedBy)).not.toContain('solver-bad');
      expect(commits(coordinator.log).size).toBe(GROUPS);
      recordFault(
        'solver worker returning wrong solutions (GRAMFUSE_FAULT)',
        'refused by the coordinator’s residual check, redelivered, solved by another worker; merged model SHA-256 equal to the in-process solve’s',
      );
      await Promise.all([good.stop(), bad.stop()]);
    },
  );

  it(
    'a task past MaxDeliver fails the job with SOLVE_FAILED naming the group and the last worker’s error',
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      const coordinator = new CoordinatorProcess(await freePort(), join(work, 'max-deliver', 'state'));
      await coordinator.start(undefined, [...distributedArgs(nats).slice(0, -2), '--solve-max-deliver', '2']);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      const bad = new SolverProcess('solver-bad', coordinator.address, nats.url, { GRAMFUSE_FAULT: 'solver.wrong-solution' });
      running.push(bad);
      await bad.ready();
      await createAndUpload(coordinator, 'max-deliver');
      const deadline = Date.now() + 120_000;
      for (;;) {
        const client = creator(coordinator.address);
        const status = await client.getJob(JOB).finally(() => client.close());
        if (status.state === 'failed') {
          expect(status.failureCode).toBe(ErrorCode.SolveFailed);
          expect(status.failureMessage).toMatch(
            /the solve task of group \S+ was delivered 2 times \(MaxDeliver\) without an accepted solution; last: solver-bad: rejected: relative residual/,
          );
          recordFault('a solve task rejected past MaxDeliver', 'job failed with SOLVE_FAILED naming the group and the last worker’s error');
          break;
        }
        expect(status.state).not.toBe('done');
        if (Date.now() > deadline) throw new Error(`the job did not fail:\n${coordinator.log}`);
        await new Promise((r) => setTimeout(r, 250));
      }
      await bad.stop();
    },
  );

  it(
    'the coordinator SIGKILLed while tasks are in flight: the restart re-publishes only uncommitted groups, same model, no group twice',
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      // Killed right after the 4th group's commit (its weights and diagnostics written, the reply not sent).
      const coordinator = await distributedCoordinator('coordinator-kill', nats, 'solve.committed:4');
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      const workers = ['solver-a', 'solver-b'].map((w) => new SolverProcess(w, coordinator.address, nats.url));
      for (const w of workers) running.push(w);
      await Promise.all(workers.map((w) => w.ready()));
      await createAndUpload(coordinator, 'coordinator-kill');
      await within(coordinator.waitExit(), 120_000, () => `the coordinator did not reach its failpoint:\n${coordinator.log}`);
      expect(coordinator.exits).toEqual(['SIGKILL']);
      const firstLog = coordinator.log;
      await coordinator.start(undefined, distributedArgs(nats));
      const { sha256, report } = await result(coordinator);
      expect(sha256).toBe(baseline.sha256);
      // The restart found at least the 4 committed groups and published only the rest (message ids de-duplicate those
      // still queued).
      const republished = /job fuse: (\d+) solve task\(s\) on GRAMFUSE_SOLVE \((\d+) group\(s\) already committed\)/.exec(
        coordinator.log.slice(firstLog.length),
      );
      expect(republished).not.toBeNull();
      expect(Number(republished![2])).toBeGreaterThanOrEqual(4);
      expect(Number(republished![1]) + Number(republished![2])).toBe(GROUPS);
      // No group was committed twice across both runs: the 4 before the kill are not solved into the result again.
      const committed = commits(coordinator.log);
      for (const by of committed.values()) expect(by).toHaveLength(1);
      expect(commits(firstLog).size).toBe(4);
      expect(committed.size).toBe(GROUPS);
      expect(new Set(report.layers.map((l) => l.group)).size).toBe(GROUPS);
      recordFault(
        'coordinator SIGKILL at solve.committed with solve tasks in flight',
        'restart re-published only uncommitted groups (message ids de-duplicate); no group committed twice; merged model SHA-256 equal to the in-process solve’s',
      );
      for (const w of workers) await w.stop();
    },
  );
});

/** `predicate()` true within `ms`, or a failure with `why()`. */
async function until(predicate: () => boolean, ms: number, why: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(why());
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A NATS client with no identity at all (plain nats-server: anyone can reach the work queue), playing the attacker. */
async function anonymousTaskTaker(nats: NatsServer): Promise<{ take(): Promise<JsMsg>; close(): Promise<void> }> {
  const nc = await connect({ servers: nats.url, name: 'not a gramfuse solver' });
  const consumer = await jetstream(nc).consumers.get(SOLVE_STREAM, SOLVE_CONSUMER);
  return {
    take: async () => {
      for (;;) {
        const msg = await consumer.next({ expires: 1000 });
        if (msg !== null) return msg;
      }
    },
    close: async () => {
      await nc.flush();
      await nc.close();
    },
  };
}

describe('a hostile solver worker or NATS client (issue 37): the job still merges correctly, or fails with a coded error', () => {
  it(
    'an over-jittered answer (the worker solves Σ G̃ + 1e-4·mean·I and says so) is refused; the merge is the in-process one',
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      const coordinator = await distributedCoordinator('over-jitter', nats);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      const bad = new SolverProcess('solver-bad', coordinator.address, nats.url, { GRAMFUSE_FAULT: 'solver.over-jitter' });
      running.push(bad);
      await bad.ready();
      await createAndUpload(coordinator, 'over-jitter');
      await until(
        () => coordinator.log.includes("solver-bad's solution rejected"),
        120_000,
        () => `no rejection:\n${coordinator.log}\n${bad.log}`,
      );
      expect(coordinator.log).toMatch(
        /solver-bad's solution rejected: over-jittered: solved with diagonal jitter 0\.0001 × mean diagonal, the coordinator's factorization of Σ G̃ needs 0 /,
      );
      const good = new SolverProcess('solver-a', coordinator.address, nats.url);
      running.push(good);
      const { sha256, report } = await result(coordinator);
      expect(sha256).toBe(baseline.sha256);
      expect(report.layers.map((l) => l.solvedBy)).not.toContain('solver-bad');
      for (const layer of report.layers) expect(layer.jitter).toBe(0);
      recordFault(
        'solver worker answering an over-jittered system (GRAMFUSE_FAULT=solver.over-jitter)',
        "refused: the coordinator's own factorization needs no jitter; solved elsewhere, merged model SHA-256 equal to the in-process solve's",
      );
      await Promise.all([good.stop(), bad.stop()]);
    },
  );

  it(
    'forged diagnostics (condition estimate 1, 1 µs) never reach the report: every figure is the coordinator’s own',
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      const coordinator = await distributedCoordinator('forged-diagnostics', nats);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      const liar = new SolverProcess('solver-a', coordinator.address, nats.url, { GRAMFUSE_FAULT: 'solver.forged-diagnostics' });
      running.push(liar);
      await liar.ready();
      await createAndUpload(coordinator, 'forged-diagnostics');
      const { sha256, report } = await result(coordinator);
      expect(sha256).toBe(baseline.sha256);
      const inProcess = new Map(baseline.report.layers.map((l) => [l.group, l]));
      for (const layer of report.layers) {
        const own = inProcess.get(layer.group)!;
        expect(layer.solvedBy).toBe('solver-a');
        // The coordinator factors Σ G̃ itself: its κ̂ and jitter are the in-process solve's, not the worker's 1.
        expect(layer.conditionEstimate).not.toBe(1);
        expect(Math.abs(layer.conditionEstimate - own.conditionEstimate) / own.conditionEstimate).toBeLessThan(1e-9);
        expect(layer.jitter).toBe(own.jitter);
        expect(layer.residualColumns).toBeGreaterThanOrEqual(16);
        expect(layer.relativeResidual).toBeLessThan(1e-9);
        // Seconds from the worker's fetch to its answer, on the coordinator's clock: never the claimed 1 µs.
        expect(layer.seconds).toBeGreaterThan(1e-3);
      }
      await liar.stop();
    },
  );

  it(
    'a forged last-delivery claim does not fail the job: JetStream counts deliveries, the task comes back and is solved',
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      const coordinator = await distributedCoordinator('forged-last-delivery', nats);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      const liar = new SolverProcess('solver-bad', coordinator.address, nats.url, { GRAMFUSE_FAULT: 'solver.forge-last-delivery:1' });
      running.push(liar);
      await liar.ready();
      await createAndUpload(coordinator, 'forged-last-delivery');
      const { sha256 } = await result(coordinator, 120_000);
      expect(sha256).toBe(baseline.sha256);
      expect(liar.log).toMatch(/delivery 1\): fault injected: reported an error as the last delivery \(10\): recorded/);
      expect(coordinator.log).toMatch(/solver-bad could not solve \(delivery 10, its word\): RUNTIME_FAILED: fault injected/);
      expect(coordinator.log).not.toMatch(/MaxDeliver/);
      recordFault(
        'solver worker claiming its first delivery was the last (GRAMFUSE_FAULT=solver.forge-last-delivery)',
        'claim ignored (JetStream counts deliveries); task redelivered and solved; merged model SHA-256 equal',
      );
      await liar.stop();
    },
  );

  it(
    'an answer for a stale delivery (its lease superseded by a redelivery) is refused before a byte is stored',
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      const coordinator = await distributedCoordinator('stale-answer', nats);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      const worker = new SolverProcess('solver-a', coordinator.address, nats.url, { GRAMFUSE_FAULT: 'solver.stale-answer:1' });
      running.push(worker);
      await worker.ready();
      await createAndUpload(coordinator, 'stale-answer');
      const { sha256 } = await result(coordinator, 120_000);
      expect(sha256).toBe(baseline.sha256);
      expect(worker.log).toMatch(
        /delivery 2\): fault injected: the answer of an earlier delivery sent with its lease: stale: lease \S+ is not this group's current delivery/,
      );
      expect(coordinator.log).toMatch(/solver-a's answer refused as stale/);
      expect(commits(coordinator.log).size).toBe(GROUPS);
      for (const by of commits(coordinator.log).values()) expect(by).toHaveLength(1);
      await worker.stop();
    },
  );

  it(
    'a stalled worker (holds its task with in-progress acks, never answers): past the per-group deadline the task is published again',
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      const coordinator = new CoordinatorProcess(await freePort(), join(work, 'stall', 'state'));
      await coordinator.start(undefined, [...distributedArgs(nats), '--solve-deadline', '5']);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      const stalled = new SolverProcess('solver-bad', coordinator.address, nats.url, { GRAMFUSE_FAULT: 'solver.stall:1' });
      running.push(stalled);
      await stalled.ready();
      await createAndUpload(coordinator, 'stall');
      await until(
        () => stalled.log.includes('stalling'),
        120_000,
        () => `no stall:\n${stalled.log}`,
      );
      const good = new SolverProcess('solver-a', coordinator.address, nats.url);
      running.push(good);
      const { sha256 } = await result(coordinator, 120_000);
      expect(sha256).toBe(baseline.sha256);
      expect(coordinator.log).toMatch(
        /group \S+: solver solver-bad fetched its sums \d+ s ago and has not answered \(the per-group solve deadline is 5 s, --solve-deadline\); published again \(1 of at most 10\)/,
      );
      recordFault(
        'a solver worker holding its task forever with in-progress acks (GRAMFUSE_FAULT=solver.stall)',
        'per-group deadline: the task published again and solved by another worker; merged model SHA-256 equal',
      );
      await Promise.all([good.stop(), stalled.stop()]);
    },
  );

  it(
    "a solve thread that never returns: the worker's watchdog reports it, releases the task, and a new thread solves it",
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      const coordinator = await distributedCoordinator('thread-hangs', nats);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      const worker = new SolverProcess('solver-a', coordinator.address, nats.url, { GRAMFUSE_FAULT: 'solver.thread-hangs:1' }, [
        '--solve-timeout',
        '3',
      ]);
      running.push(worker);
      await worker.ready();
      await createAndUpload(coordinator, 'thread-hangs');
      const { sha256 } = await result(coordinator, 120_000);
      expect(sha256).toBe(baseline.sha256);
      expect(worker.log).toMatch(/could not solve: DEADLINE_EXCEEDED: the solve thread did not answer within 3 s \(the worker's watchdog/);
      expect(coordinator.log).toMatch(
        /solver-a could not solve \(delivery 1, its word\): DEADLINE_EXCEEDED: the solve thread did not answer/,
      );
      await worker.stop();
    },
  );

  it(
    'an anonymous NATS client terms a task (TERMINATED advisory): the coordinator publishes it again and the job completes',
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      const coordinator = await distributedCoordinator('anonymous-term', nats);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      await createAndUpload(coordinator, 'anonymous-term');
      await until(
        () => /solve task\(s\) on GRAMFUSE_SOLVE/.test(coordinator.log),
        60_000,
        () => coordinator.log,
      );
      const attacker = await anonymousTaskTaker(nats);
      const msg = await attacker.take();
      const group = parseSolveTask(msg.data).group;
      // Terminated without a reason (nats-server 2.9 reads only the bare +TERM): the message leaves the work queue.
      msg.term();
      await attacker.close();
      await until(
        () => coordinator.log.includes(`group ${group}: its task message`),
        30_000,
        () => `no reissue:\n${coordinator.log}`,
      );
      const worker = new SolverProcess('solver-a', coordinator.address, nats.url);
      running.push(worker);
      const { sha256 } = await result(coordinator, 120_000);
      expect(sha256).toBe(baseline.sha256);
      expect(coordinator.log).toMatch(
        /its task message \(stream sequence \d+\) was terminated by a client of the queue after \d+ delivery\(ies\); published again \(1 of at most 10\)/,
      );
      recordFault(
        'an anonymous NATS client terminating a solve task',
        'MSG_TERMINATED advisory: the task published again; merged model SHA-256 equal',
      );
      await worker.stop();
    },
  );
  it(
    'an anonymous NATS client holds a task with in-progress acks, never fetching it: past the deadline it is published again',
    { timeout: 300_000 },
    async () => {
      const nats = await NatsServer.start();
      running.push({ stop: () => nats.stop() });
      const coordinator = new CoordinatorProcess(await freePort(), join(work, 'anonymous-hold', 'state'));
      await coordinator.start(undefined, [...distributedArgs(nats), '--solve-deadline', '5']);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      await createAndUpload(coordinator, 'anonymous-hold');
      await until(
        () => /solve task\(s\) on GRAMFUSE_SOLVE/.test(coordinator.log),
        60_000,
        () => coordinator.log,
      );
      const attacker = await anonymousTaskTaker(nats);
      const msg = await attacker.take();
      const task = parseSolveTask(msg.data);
      const group = task.group;
      const holding = setInterval(() => msg.working(), 500);
      try {
        // Meanwhile a listed solver identity that holds no delivery floods Submit with answers for that group: each is
        // told `stale` from its header, and not a byte of them is stored or checked.
        const rogue = connectFederation({ address: coordinator.address, insecureIdentity: 'solver-c', deadlineSeconds: 10 });
        const x = new Uint8Array(task.n * task.rhs * 8);
        const header = {
          jobId: JOB,
          group,
          gramSha256: task.gram.sha256,
          n: task.n,
          rhs: task.rhs,
          jitter: 0,
          conditionEstimate: 1,
          seconds: 1,
          sha256: createHash('sha256').update(x).digest('hex'),
          device: 'cpu',
          errorCode: '',
          errorMessage: '',
          delivery: 1,
          lastDelivery: true,
        };
        const replies = await Promise.all(
          Array.from({ length: 20 }, (_, i) => rogue.submitSolution({ ...header, lease: i.toString(16).padStart(32, '0') }, x)),
        );
        rogue.close();
        for (const reply of replies) expect(reply.outcome).toBe('stale');
        expect(readdirSync(join(work, 'anonymous-hold', 'state', 'jobs', JOB, 'solve')).includes('answers')).toBe(false);
        const worker = new SolverProcess('solver-a', coordinator.address, nats.url);
        running.push(worker);
        const { sha256 } = await result(coordinator, 120_000);
        expect(sha256).toBe(baseline.sha256);
        expect(coordinator.log).toContain(
          `group ${group}: no solver fetched its sums for 5 s (the per-group solve deadline, --solve-deadline): no solver is running, or a client that is not one holds its task message; published again (1 of at most 10)`,
        );
        await worker.stop();
      } finally {
        clearInterval(holding);
        await attacker.close();
      }
      recordFault(
        'an anonymous NATS client holding a solve task with in-progress acks',
        'per-group deadline: the task published again and solved; merged model SHA-256 equal',
      );
    },
  );
});
