// Chaos: the coordinator is killed with SIGKILL at seeded points of a 3-agent job (while chunks are stored,
// between verification and commit, inside the group commit, during the solve, while the result is
// written). After each restart the job must finish with the uninterrupted run's merged model, each agent
// may re-send only what was in flight, nothing is committed twice, and the ledgers verify and reconcile.
// GRAMFUSE_CHAOS_POINTS (default 20; `npm run test:chaos` runs 100) and GRAMFUSE_CHAOS_SEED replay a run.
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runAgent, seededRandom } from '../../../agent/index.js';
import { connectFederation } from '../../../client/index.js';
import { auditReconcile } from '../../../cli/index.js';
import { verifyLedger } from '../../../shared/audit/index.js';
import { DEFAULT_UPLOAD_WINDOW } from '../../../shared/federation/index.js';
import { exampleAgent } from '../../helpers/agent-options.js';
import { CoordinatorProcess } from '../../helpers/coordinator-process.js';
import { exampleModel } from '../../helpers/examples.js';
import { freePort } from '../../helpers/nats-server.js';
import { recordFault } from '../../helpers/reliability.js';

const SEED = Number(process.env.GRAMFUSE_CHAOS_SEED ?? 20261122);
const POINTS = Number(process.env.GRAMFUSE_CHAOS_POINTS ?? 20);
const orgs = ['org0', 'org1', 'org2'];
const CHUNK = 64 * 1024;
const work = mkdtempSync(join(tmpdir(), 'gramfuse-chaos-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Where the coordinator can be killed, and how many times each site is reached in one job (upper bound for n). */
const SITES: [string, number][] = [
  ['chunk.written', 400],
  ['statistic.verified', 180],
  ['commit.synced', 3],
  ['commit.receipts', 3],
  ['commit.recorded', 3],
  ['solve.group', 10],
  ['solve.parameter', 20],
  ['write.model', 1],
  ['write.safetensors', 1],
  ['write.report', 1],
  ['solve.finished', 1],
  ['solve.recorded', 1],
];

/** `count` distinct kill points from the seed: every site once, then random sites and hit counts. */
function killPoints(count: number): string[] {
  const random = seededRandom(SEED);
  const points = new Set<string>();
  for (const [site, max] of SITES) if (points.size < count) points.add(`${site}:${1 + Math.floor(random() * max)}`);
  while (points.size < count) {
    const [site, max] = SITES[Math.floor(random() * SITES.length)]!;
    points.add(`${site}:${1 + Math.floor(random() * max)}`);
  }
  return [...points];
}

interface RunResult {
  sha256: string;
  kills: number;
  chunksSent: Map<string, number>;
  /** The most chunks an agent kept unacknowledged (the job's upload window). */
  window: number;
  stateDir: string;
  agentLedgers: string[];
  log: string;
}

/** One job end to end; `failpoint` kills the first coordinator process there; it is restarted until the job is done. */
async function runJob(name: string, failpoint: string | undefined): Promise<RunResult> {
  const dir = join(work, name);
  const coordinator = new CoordinatorProcess(await freePort(), join(dir, 'state'));
  await coordinator.start(failpoint);
  let stopped = false;
  let kills = 0;
  const monitor = (async () => {
    for (;;) {
      await coordinator.waitExit();
      if (stopped) return;
      kills++;
      await coordinator.start();
    }
  })();
  try {
    const creator = connectFederation({ address: coordinator.address, insecureIdentity: 'creator', deadlineSeconds: 10 });
    await creator.createJob(
      JSON.stringify({ id: 'chaos', participants: orgs, policy: { minRowsPerGroup: 16 } }),
      readFileSync(exampleModel('org0')),
    );
    creator.close();
    const chunksSent = new Map<string, number>();
    let window = 0;
    await Promise.all(
      orgs.map(async (org) => {
        const workDir = join(dir, 'agents', org);
        // Reuse the baseline's bundle: the run is about uploads and the coordinator, not collection.
        if (name !== 'baseline')
          cpSync(join(work, 'baseline', 'agents', org, 'chaos', 'bundle'), join(workDir, 'chaos', 'bundle'), { recursive: true });
        let count = 0;
        for (let run = 0; ; run++) {
          try {
            const outcome = await runAgent(
              exampleAgent(org, { address: coordinator.address, insecureIdentity: org, deadlineSeconds: 10 }, 'chaos', workDir, {
                threads: 1,
                chunkBytes: CHUNK,
                uploadAttempts: 10,
                onUpload: () => {
                  count++;
                },
              }),
            );
            window = Math.max(window, outcome.uploadWindow);
            break;
          } catch (error) {
            // Every restart of the agent counts: the command is simply run again, as an operator would.
            if (run >= 5) throw new Error(`${org}: ${(error as Error).message}\ncoordinator log:\n${coordinator.log}`);
          }
        }
        chunksSent.set(org, count);
      }),
    );
    // Wait for the result, through restarts.
    const deadline = Date.now() + 180_000;
    let bytes: Buffer | undefined;
    while (bytes === undefined) {
      if (Date.now() > deadline) throw new Error(`job not done in time:\n${coordinator.log}`);
      const client = connectFederation({ address: coordinator.address, insecureIdentity: 'creator', deadlineSeconds: 10 });
      try {
        const status = await client.getJob('chaos');
        if (status.state === 'failed') throw new Error(`job failed: ${status.failureCode}: ${status.failureMessage}\n${coordinator.log}`);
        if (status.state === 'done') bytes = await client.download('chaos', 'merged.onnx');
      } catch (error) {
        if ((error as Error).message.startsWith('job failed')) throw error;
      } finally {
        client.close();
      }
      if (bytes === undefined) await new Promise((r) => setTimeout(r, 300));
    }
    return {
      sha256: createHash('sha256').update(bytes).digest('hex'),
      kills,
      chunksSent,
      window,
      stateDir: coordinator.stateDir,
      agentLedgers: orgs.map((org) => join(dir, 'agents', org, 'audit.jsonl')),
      log: coordinator.log,
    };
  } finally {
    stopped = true;
    await coordinator.kill('SIGTERM');
    await monitor;
  }
}

describe(`coordinator killed with SIGKILL at ${POINTS} seeded points (seed ${SEED})`, () => {
  let baseline: RunResult;
  const outcomes: { point: string; kills: number; resent: number }[] = [];

  beforeAll(async () => {
    baseline = await runJob('baseline', undefined);
    expect(baseline.kills).toBe(0);
  }, 300_000);

  afterAll(() => {
    const fired = outcomes.filter((o) => o.kills > 0).length;
    process.stdout.write(
      `chaos: seed ${SEED}, ${outcomes.length} kill points, ${fired} fired; resent chunks per agent ≤ ${Math.max(0, ...outcomes.map((o) => o.resent))}\n`,
    );
  });

  it.each(killPoints(POINTS).map((p, i) => [i + 1, p]))('kill point %i: %s', { timeout: 300_000 }, async (index, point) => {
    const result = await runJob(`kill-${index}`, point);
    // The failpoint fired: the coordinator died at least once and came back.
    expect(result.kills, `${point} was never reached:\n${result.log}`).toBeGreaterThanOrEqual(1);
    expect(result.sha256, `seed ${SEED}, ${point}`).toBe(baseline.sha256);
    // Each agent re-sent at most what was in flight when the coordinator died: its window of unacknowledged chunks.
    let resent = 0;
    for (const org of orgs) resent = Math.max(resent, result.chunksSent.get(org)! - baseline.chunksSent.get(org)!);
    outcomes.push({ point, kills: result.kills, resent });
    expect(result.window, 'the job default upload window').toBe(DEFAULT_UPLOAD_WINDOW);
    expect(resent, `seed ${SEED}, ${point}: chunks re-sent`).toBeLessThanOrEqual(result.window * result.kills);
    // Nothing committed twice; both sides' ledgers verify and agree.
    const { records } = await verifyLedger(join(result.stateDir, 'audit.jsonl'));
    const commits = records
      .filter((r) => r.kind === 'statistic.committed')
      .map((r) => `${String(r.facts.owner)}/${String(r.facts.statistic)}`);
    expect(new Set(commits).size).toBe(commits.length);
    expect(commits.length).toBe(3 * 64);
    for (const ledger of result.agentLedgers) {
      const reconciled = await auditReconcile(ledger, join(result.stateDir, 'audit.jsonl'));
      expect(reconciled.agree, JSON.stringify(reconciled.rows.filter((r) => r.status !== 'match').slice(0, 3))).toBe(true);
    }
    recordFault(
      `coordinator SIGKILL at ${point.split(':')[0]!}`,
      `job finished after restart with the uninterrupted run's merged model (SHA-256 equal); at most the upload window (8 chunks) re-sent per agent per kill; no statistic committed twice; ledgers verify and reconcile`,
      result.kills,
    );
    rmSync(join(work, `kill-${index}`), { recursive: true, force: true });
  });
});
