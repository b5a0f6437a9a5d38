// Issue 37 item 7 / issue 41 item 4: a whole job through nats-server running deploy/nats-server.conf unchanged (TLS
// with a federation CA made by gramfuse's own certificate code, one NKEY user per role): the coordinator publishes
// events, mirrors its ledger and queues the solve tasks; a solver worker takes them; both agents mirror their ledgers;
// `job watch` and `audit verify` follow as observers. Every NATS client of the system speaks TLS with credentials.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { runAgent } from '../../../agent/index.js';
import { connectFederation } from '../../../client/index.js';
import type { JobEvent } from '../../../shared/events/index.js';
import { exampleAgent } from '../../helpers/agent-options.js';
import { runCli } from '../../helpers/cli.js';
import { CoordinatorProcess } from '../../helpers/coordinator-process.js';
import { exampleModel } from '../../helpers/examples.js';
import { SecureNats } from '../../helpers/nats-secure.js';
import { freePort } from '../../helpers/nats-server.js';
import { SolverProcess } from '../../helpers/solver-process.js';

const orgs = ['org0', 'org1'];
const JOB = 'prod';
const work = mkdtempSync(join(tmpdir(), 'gramfuse-nats-production-'));
const running: { stop(): Promise<void> }[] = [];
afterAll(async () => {
  for (const r of running.reverse()) await r.stop().catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
});

describe('a job through the production NATS configuration', () => {
  it(
    'coordinator, solver, agent mirrors and observers each with their own NATS user over TLS: the job finishes and every ledger is on the stream',
    { timeout: 300_000 },
    async () => {
      const nats = await SecureNats.start();
      running.push(nats);
      const coordinator = new CoordinatorProcess(await freePort(), join(work, 'state'));
      await coordinator.start(undefined, [
        ...nats.roles.coordinator.args,
        '--solvers',
        'nats',
        '--solver-identities',
        'solver-a',
        '--solve-ack-wait',
        '5',
      ]);
      running.push({ stop: () => coordinator.kill('SIGTERM') });
      const solver = new SolverProcess('solver-a', coordinator.address, nats.roles.solver.args);
      running.push(solver);
      await solver.ready();

      // The observer follows the job from before it exists to its end.
      const watch = runCli(['job', 'watch', JOB, ...nats.roles.observer.args, '--json', '--timeout', '240']);

      const creator = connectFederation({ address: coordinator.address, insecureIdentity: 'creator', deadlineSeconds: 10 });
      await creator.createJob(
        JSON.stringify({ id: JOB, participants: orgs, policy: { minRowsPerGroup: 16 } }),
        readFileSync(exampleModel('org0')),
      );
      creator.close();
      const results = await Promise.all(
        orgs.map((org) =>
          runAgent(
            exampleAgent(org, { address: coordinator.address, insecureIdentity: org, deadlineSeconds: 10 }, JOB, join(work, org), {
              threads: 1,
              nats: nats.roles['agent-mirror'].endpoint,
            }),
          ),
        ),
      );
      for (const r of results) expect(r.auditBacklog).toBe(0); // each agent's records reached the stream as its mirror user

      const watched = await watch;
      expect(watched.code, `${watched.stderr}\n${coordinator.log}\n${solver.log}`).toBe(0);
      const events = watched.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as JobEvent);
      expect(events.at(-1)).toMatchObject({ type: 'state', data: { state: 'done' } });
      expect(events.some((e) => e.type === 'solve' && e.data.state === 'committed' && e.data.worker === 'solver-a')).toBe(true);
      expect(watched.stderr).not.toMatch(/skipped/);
      expect(coordinator.log).toMatch(/job prod: group \S+ committed, solved by solver-a/);
      expect(coordinator.log).not.toMatch(/wait for NATS|NOT_AUTHORIZED|Permissions Violation/i);

      // Every writer's ledger is on GRAMFUSE_AUDIT, read back by the observer and verified record by record.
      const verify = await runCli(['audit', 'verify', ...nats.roles.observer.args]);
      expect(verify.code, verify.stderr).toBe(0);
      for (const ledger of [...results.map((r) => r.ledger), join(work, 'state', 'audit.jsonl')]) {
        const lines = readFileSync(ledger, 'utf8').trim().split('\n');
        const writer = (JSON.parse(lines[0]!) as { key: string }).key;
        expect(verify.stdout).toMatch(
          new RegExp(`writer ${writer} \\([^)]*\\): ${lines.length} records, jobs [^;]*; chain and signatures verify`),
        );
      }
      expect(verify.stdout).not.toMatch(/skipped/);
      // An owner confirms its ledger against the stream with its mirror user (`audit publish` reads the stream back).
      const confirm = await runCli(['audit', 'publish', '--ledger', results[0]!.ledger, ...nats.roles['agent-mirror'].args]);
      expect(confirm.code, confirm.stderr).toBe(0);
      expect(confirm.stdout).toMatch(/all \d+ records are in stream GRAMFUSE_AUDIT/);

      // An agent's mirror credentials do not make it an observer, nor a coordinator: no events, no tasks.
      const mirrorWatch = await runCli(['job', 'watch', JOB, ...nats.roles['agent-mirror'].args, '--timeout', '5']);
      expect(mirrorWatch.code).toBe(41); // NOT_AUTHORIZED's exit code
      expect(mirrorWatch.stderr).toMatch(
        /NOT_AUTHORIZED: NATS at \S+ does not permit this \(Permissions Violation for Publish to "\$JS\.API\.STREAM\.INFO\.GRAMFUSE_JOBS"\)/,
      );
      // No NATS client ever connected without credentials.
      expect(nats.server.output).not.toMatch(/authentication error/);
    },
  );
});
