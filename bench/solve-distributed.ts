// bench/solve-distributed (issue #17): the solve phase of one federated RegMean job on the synthetic BERT-base-size
// model (or --arch <decoder preset>), in-process (the coordinator's worker thread, 2 threads) against solver workers
// pulling tasks from a real nats-server's JetStream work queue: 1 worker × 2 threads, 1 × 1 and 2 × 1. Every
// configuration merges the same statistics (the owners' bundles are collected once and uploaded again), so the merged
// models must be byte-identical. Reported per configuration: the solve phase's wall time (from the job's `solving`
// event to the event of its last Gram group), and, from the workers' own records, each task's overhead — fetching
// the two sums, submitting X, the coordinator's check and commit — as a fraction of its solve time.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

import { connectFederation } from '../client/index.js';
import type { JobEvent } from '../shared/events/index.js';
import { NatsEventBus } from '../shared/nats/index.js';
import { analyzeModel, loadModel } from '../shared/onnx/index.js';
import { type BenchContext, table } from './harness.js';
import { BERT_BASE, writeSyntheticBert } from './synthetic-bert.js';
import { DECODER_PRESETS, type DecoderPreset, writeSyntheticDecoder } from './synthetic-decoder.js';

const repo = resolve(import.meta.dirname, '..');
const cli = join(repo, 'dist/cli/main.js');
const fixtures = resolve(repo, '../shared/fixtures');
const JOB = 'bench';
const OWNERS = ['org0', 'org1'];

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

interface Child {
  readonly process: ChildProcess;
  stdout: string;
  stderr: string;
}

function start(command: string, args: string[]): Child {
  const child: Child = { process: spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] }), stdout: '', stderr: '' };
  child.process.stdout!.setEncoding('utf8').on('data', (c: string) => (child.stdout += c));
  child.process.stderr!.setEncoding('utf8').on('data', (c: string) => (child.stderr += c));
  return child;
}

async function until(what: string, ready: () => boolean, child: Child, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ready()) {
    if (child.process.exitCode !== null || child.process.signalCode !== null) throw new Error(`${what} exited:\n${child.stderr}`);
    if (Date.now() > deadline) throw new Error(`${what} not ready in ${ms} ms:\n${child.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function stop(child: Child): Promise<void> {
  if (child.process.exitCode !== null || child.process.signalCode !== null) return;
  const exited = new Promise((r) => child.process.once('exit', r));
  child.process.kill('SIGTERM');
  await exited;
}

interface TaskRecord {
  readonly group: string;
  readonly n: number;
  readonly rhs: number;
  readonly outcome: string;
  readonly fetchSeconds: number;
  readonly solveSeconds: number;
  readonly submitSeconds: number;
}

interface ConfigResult {
  readonly name: string;
  readonly workers: number;
  readonly threadsPerWorker: number;
  readonly solveSeconds: number;
  /** Σ (fetch + submit, check and commit) / Σ solve over the tasks with n ≥ 768 (null in-process). */
  readonly overheadFraction: number | null;
  readonly overheadByN: Record<string, number>;
  readonly mergedSha256: string;
  readonly tasks: number;
  /** Σ over the committed tasks of the workers' fetch, solve and submit (check and commit included) seconds. */
  readonly breakdown: { readonly fetch: number; readonly solve: number; readonly submit: number } | null;
  /** Σ over the committed tasks of the bytes fetched (Σ G̃ packed + R) and submitted (X), float64. */
  readonly bytes: { readonly fetched: number; readonly submitted: number };
}

/** One job on a fresh coordinator (solving in-process, or by `workers` solver processes of `threads` threads each). */
async function runJob(
  dir: string,
  model: string,
  nats: string,
  name: string,
  workers: number,
  threads: number,
  examples: number,
): Promise<ConfigResult> {
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const identities = Array.from({ length: workers }, (_, i) => `solver-${i + 1}`);
  const coordinator = start(process.execPath, [
    cli,
    'coordinator',
    'serve',
    '--listen',
    address,
    '--state',
    join(dir, name, 'state'),
    '--insecure-loopback',
    '--creators',
    'creator',
    '--template-dir',
    dirname(model),
    '--nats',
    nats,
    ...(workers > 0 ? ['--solvers', 'nats', '--solver-identities', identities.join(','), '--solve-ack-wait', '120'] : []),
    '--json',
  ]);
  const solvers: Child[] = [];
  try {
    await until('coordinator', () => coordinator.stdout.includes('listening'), coordinator);
    for (const identity of identities) {
      const solver = start(process.execPath, [
        cli,
        'solver',
        'serve',
        '--coordinator',
        address,
        '--nats',
        nats,
        '--insecure-loopback',
        '--identity',
        identity,
        '--device',
        'cpu',
        '--threads',
        String(threads),
        '--json',
      ]);
      solvers.push(solver);
      await until(identity, () => solver.stderr.includes(' ready on '), solver);
    }
    // Every configuration runs job `bench` on the same nats-server: only this run's events count.
    const startedAt = Date.now();
    const creator = connectFederation({ address, insecureIdentity: 'creator' });
    await creator.createJob(
      JSON.stringify({
        id: JOB,
        participants: OWNERS,
        policy: { minRowsPerGroup: 1 },
        merge: { method: 'regmean', alpha: 0.9 },
        limits: { maxJobBytes: 64 * 1024 ** 3 },
      }),
      { path: model },
    );
    // The first configuration collects; the others upload the same bundles again.
    for (const [i, owner] of OWNERS.entries()) {
      const workDir = join(dir, name, 'agents', owner);
      if (name !== 'in-process') {
        await mkdir(join(workDir, JOB), { recursive: true });
        await cp(join(dir, 'in-process', 'agents', owner, JOB, 'bundle'), join(workDir, JOB, 'bundle'), { recursive: true });
      }
      const agent = start(process.execPath, [
        cli,
        'agent',
        'run',
        '--coordinator',
        address,
        '--insecure-loopback',
        '--identity',
        owner,
        '--job',
        JOB,
        '--model',
        model,
        '--data',
        join(fixtures, 'scenarios', 'label-skew', `org${i}.jsonl`),
        '--tokenizer',
        join(fixtures, 'tokenizer', 'tokenizer.json'),
        '--max-examples',
        String(examples),
        '--seed',
        String(i + 1),
        '--max-length',
        '64',
        '--dtype',
        'float32',
        '--work-dir',
        workDir,
        '--min-rows',
        '1',
        '--yes',
        '--json',
      ]);
      const code = await new Promise<number | null>((r) => agent.process.once('exit', r));
      if (code !== 0) throw new Error(`agent ${owner} failed:\n${agent.stderr}`);
    }
    const final = await creator.watch(JOB, () => undefined);
    creator.close();
    if (final.state !== 'done') throw new Error(`job ${final.state}: ${final.failureMessage}\n${coordinator.stderr}`);
    // The solve phase from the job's events (the coordinator published them on NATS): `solving` to its last group.
    const bus = await NatsEventBus.connect(nats, 'gramfuse bench');
    const events: JobEvent[] = [];
    const unsubscribe = await bus.subscribe(JOB, (e) => Date.parse(e.time) >= startedAt && events.push(e), { history: true });
    const deadline = Date.now() + 20_000;
    while (!events.some((e) => e.type === 'result') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await unsubscribe();
    await bus.close();
    const solving = events.find((e) => e.type === 'state' && e.data.state === 'solving');
    const last = events
      .filter(
        (e) =>
          e.type === 'solve' &&
          e.data.phase === 'solve' &&
          e.data.done === e.data.total &&
          (workers === 0 ? e.data.state === undefined : e.data.state === 'committed'),
      )
      .at(0);
    if (solving === undefined || last === undefined) throw new Error(`bench solve-distributed: the job's solve events are missing`);
    const solveSeconds = (Date.parse(last.time) - Date.parse(solving.time)) / 1000;
    await Promise.all(solvers.map(stop));
    const records = solvers.flatMap((s) =>
      s.stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as TaskRecord)
        .filter((r) => r.outcome === 'committed'),
    );
    const fraction = (rs: readonly TaskRecord[]): number =>
      rs.reduce((s, r) => s + r.fetchSeconds + r.submitSeconds, 0) / rs.reduce((s, r) => s + r.solveSeconds, 0);
    const byN: Record<string, number> = {};
    for (const n of [...new Set(records.map((r) => r.n))].sort((a, b) => a - b)) byN[n] = fraction(records.filter((r) => r.n === n));
    const large = records.filter((r) => r.n >= 768);
    return {
      name,
      workers,
      threadsPerWorker: workers === 0 ? 2 : threads,
      solveSeconds,
      overheadFraction: workers === 0 || large.length === 0 ? null : fraction(large),
      overheadByN: byN,
      mergedSha256: final.resultSha256,
      tasks: records.length,
      bytes: {
        fetched: records.reduce((t, r) => t + 8 * ((r.n * (r.n + 1)) / 2 + r.n * r.rhs), 0),
        submitted: records.reduce((t, r) => t + 8 * r.n * r.rhs, 0),
      },
      breakdown:
        workers === 0
          ? null
          : {
              fetch: records.reduce((t, r) => t + r.fetchSeconds, 0),
              solve: records.reduce((t, r) => t + r.solveSeconds, 0),
              submit: records.reduce((t, r) => t + r.submitSeconds, 0),
            },
    };
  } finally {
    await Promise.all(solvers.map(stop));
    await stop(coordinator);
  }
}

export async function benchSolveDistributed(context: BenchContext): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'gramfuse-bench-solve-distributed-'));
  const natsPort = await freePort();
  const natsServer = start(['/usr/sbin/nats-server', '/usr/bin/nats-server'].find((p) => existsSync(p)) ?? 'nats-server', [
    '-js',
    '-a',
    '127.0.0.1',
    '-p',
    String(natsPort),
    '-sd',
    join(dir, 'nats'),
  ]);
  try {
    await until(
      'nats-server',
      () => natsServer.stderr.includes('Server is ready') || natsServer.stdout.includes('Server is ready'),
      natsServer,
      15_000,
    );
    const nats = `nats://127.0.0.1:${natsPort}`;
    const arch = context.option('arch') ?? 'bert-base';
    if (arch !== 'bert-base' && !(arch in DECODER_PRESETS))
      throw new Error(`bench solve-distributed: unknown --arch ${arch}; choose bert-base or ${Object.keys(DECODER_PRESETS).join(', ')}`);
    const decoder = arch === 'bert-base' ? undefined : DECODER_PRESETS[arch as DecoderPreset];
    const bert = context.quick ? { ...BERT_BASE, layers: 2 } : BERT_BASE;
    const model = join(dir, arch === 'bert-base' ? 'synthetic-bert.onnx' : `synthetic-${arch}.onnx`);
    if (decoder === undefined) await writeSyntheticBert(model, bert);
    else await writeSyntheticDecoder(model, context.quick ? { ...decoder, layers: 2 } : decoder, true);
    const analysis = await analyzeModel(await loadModel(model));
    const sizes = [...new Set(analysis.gramGroups.map((g) => g.inDim))].sort((a, b) => a - b);
    const examples = 8;
    const configs: [string, number, number][] = [
      ['in-process', 0, 2],
      ['1 worker × 2 threads', 1, 2],
      ['1 worker × 1 thread', 1, 1],
      ['2 workers × 1 thread', 2, 1],
    ];
    const results: ConfigResult[] = [];
    for (const [name, workers, threads] of configs) {
      process.stderr.write(`bench solve-distributed: ${name}…\n`);
      const r = await runJob(dir, model, nats, name, workers, threads, examples);
      results.push(r);
      context.emit({
        bench: 'solve-distributed',
        arch,
        groups: analysis.gramGroups.length,
        workers: r.workers,
        threadsPerWorker: r.threadsPerWorker,
        solveSeconds: r.solveSeconds,
        overheadFraction: r.overheadFraction,
        overheadByN: r.overheadByN,
        taskSeconds: r.breakdown,
        bytesFetched: r.bytes.fetched,
        bytesSubmitted: r.bytes.submitted,
        mergedSha256: r.mergedSha256,
        sameAsInProcess: r.mergedSha256 === results[0]!.mergedSha256,
      });
    }
    const inProcess = results[0]!;
    const one = results.find((r) => r.workers === 1 && r.threadsPerWorker === 1)!;
    const two = results.find((r) => r.workers === 2)!;
    const speedup = one.solveSeconds / two.solveSeconds;
    const worst = Math.max(...results.map((r) => r.overheadFraction ?? 0));
    context.print(
      [
        `solve-distributed — ${arch === 'bert-base' ? `synthetic BERT (${bert.layers} layers, hidden ${bert.hidden}, FFN ${bert.ffn})` : `synthetic ${arch}`}, ` +
          `${analysis.gramGroups.length} Gram groups (n ∈ {${sizes.join(', ')}}), 2 owners, solver workers on one nats-server over loopback, this machine's cores shared by all`,
        table(
          [
            'configuration',
            'solve phase s',
            'vs in-process',
            'tasks',
            'Σ fetch / solve / submit s',
            'overhead / solve (n ≥ 768)',
            'by n',
            'merged model',
          ],
          results.map((r) => [
            r.name,
            r.solveSeconds.toFixed(2),
            (r.solveSeconds / inProcess.solveSeconds).toFixed(2),
            r.workers === 0 ? '-' : r.tasks,
            r.breakdown === null
              ? '-'
              : `${r.breakdown.fetch.toFixed(2)} / ${r.breakdown.solve.toFixed(2)} / ${r.breakdown.submit.toFixed(2)}`,
            r.overheadFraction === null ? '-' : `${(100 * r.overheadFraction).toFixed(1)} %`,
            Object.entries(r.overheadByN)
              .map(([n, f]) => `${n}: ${(100 * f).toFixed(1)} %`)
              .join(', ') || '-',
            r.mergedSha256 === inProcess.mergedSha256 ? 'same SHA-256' : `DIFFERS ${r.mergedSha256.slice(0, 12)}`,
          ]),
        ),
        `2 workers × 1 thread vs 1 worker × 1 thread: ${speedup.toFixed(2)}× (goal ≥ 1.7); per-task overhead (fetch + submit + check + commit) at most ${(100 * worst).toFixed(1)} % of the solve (goal ≤ 5 % for n ≥ 768)`,
      ].join('\n'),
    );
  } finally {
    await stop(natsServer);
    await rm(dir, { recursive: true, force: true });
  }
}
