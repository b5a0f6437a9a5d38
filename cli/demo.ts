import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { evaluateEach } from '../agent/index.js';
import { connectFederation, downloadMergedModel } from '../client/index.js';
import { ErrorCode, GramfuseError } from '../shared/index.js';
import { type MergeReport, MergeSpec } from '../shared/merge/index.js';
import { loadModel, maxRelativeParameterDifference } from '../shared/onnx/index.js';
import { auditReconcile, auditVerify, formatReconciliation } from './audit-commands.js';
import { certsFlags, certsInit, certsIssue, loadTls } from './federation-commands.js';
import { exportHfCheckpoint } from './hf-export.js';
import { runLocalMerge } from './local-merge.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), fileURLToPath(import.meta.url).endsWith('.ts') ? '..' : '../..');
/** The shipped example: label-skew-v1's base and orgs 0–2 (examples/README.md). */
export const DEMO_EXAMPLES = join(repoRoot, 'examples', 'label-skew-v1');
const cliEntry = join(repoRoot, 'dist', 'cli', 'main.js');

export interface DemoRow {
  readonly model: string;
  /** org: one owner's model; merge: one merged model; ensemble: all owners' models kept and run. */
  readonly kind: 'org' | 'merge' | 'ensemble';
  readonly accuracy: number;
  readonly macroF1: number;
}

export interface FederatedEvaluation {
  readonly owner: string;
  readonly examples: number;
  readonly accuracy: number;
  readonly macroF1: number;
}

export interface DemoResult {
  /** Central test-set figures, best accuracy first. */
  readonly results: DemoRow[];
  /** What each agent measured on its own held-out split and reported (signed, in both ledgers). */
  readonly federated: FederatedEvaluation[];
  /** One sentence on what the figures mean, computed from them. */
  readonly summary: string;
  readonly mergedModel: string;
  readonly mergedSha256: string;
  /** The merged model as a Hugging Face checkpoint directory (names from the export's structure). */
  readonly hfCheckpoint: string;
  readonly report: string;
  readonly ledgers: { coordinator: string; agents: string[] };
  /** One line per ledger: the result of `gramfuse audit verify`, then one per agent: `audit reconcile`. */
  readonly verify: string[];
  /**
   * With secure aggregation: max over merged parameters of max |secure − plaintext| / max |plaintext|, the plaintext merge
   * being the one pipeline run locally over the same owners' own bundles.
   */
  readonly maxRelDiffVsPlain?: number;
  readonly seconds: number;
}

export interface DemoOptions {
  readonly out?: string;
  readonly log: (line: string) => void;
  /** Each agent collects on a seeded subset of at most this many examples (tests). */
  readonly maxExamples?: number;
  /** Evaluate on a seeded subset of the test split (tests). */
  readonly maxTestExamples?: number;
  /** Run the job with privacy.secureAggregation (issue #18). @default false */
  readonly secureAggregation?: boolean;
}

const pct = (x: number): string => `${(x * 100).toFixed(1)} %`;

/** The sentence under the demo's table: what these numbers show, and nothing they do not. */
export function summarizeDemo(rows: readonly DemoRow[]): string {
  const regmean = rows.find((r) => r.model === 'regmean');
  const average = rows.find((r) => r.model === 'average');
  const orgs = rows.filter((r) => r.kind === 'org');
  const ensemble = rows.find((r) => r.kind === 'ensemble');
  if (regmean === undefined || average === undefined || orgs.length === 0) return '';
  const bestOrg = orgs.reduce((a, b) => (b.accuracy > a.accuracy ? b : a));
  const points = (a: number, b: number): string => `${Math.abs((a - b) * 100).toFixed(1)} points`;
  const vsAverage =
    regmean.accuracy > average.accuracy
      ? `RegMean's one merged model (${pct(regmean.accuracy)}) beats the simple average of the same weights by ${points(regmean.accuracy, average.accuracy)}`
      : `RegMean's merged model (${pct(regmean.accuracy)}) does not beat the simple average (${pct(average.accuracy)}) here`;
  const vsBest =
    regmean.accuracy > bestOrg.accuracy
      ? `and the best single owner's model (${bestOrg.model}, ${pct(bestOrg.accuracy)}) by ${points(regmean.accuracy, bestOrg.accuracy)}`
      : `but not the best single owner's model (${bestOrg.model}, ${pct(bestOrg.accuracy)})`;
  const vsEnsemble =
    ensemble === undefined
      ? ''
      : ensemble.accuracy > regmean.accuracy
        ? `; the ensemble, which keeps and runs all ${orgs.length} models, stays ${points(ensemble.accuracy, regmean.accuracy)} above it`
        : `; it even matches the ensemble of all ${orgs.length} models (${pct(ensemble.accuracy)})`;
  return `${vsAverage}, ${vsBest}${vsEnsemble}; no owner's text left its machine, only the statistics in the ledgers.`;
}

/** The demo's table (markdown), best first, and its sentence. */
export function formatDemoTable(result: Pick<DemoResult, 'results' | 'federated' | 'summary'>): string {
  const width = Math.max(8, ...result.results.map((r) => r.model.length));
  const lines = [
    'Accuracy on the English test split (Debian package descriptions, 14 labels), best first:',
    `| ${'model'.padEnd(width)} | kind     | accuracy | macro-F1 |`,
    `| ${'-'.repeat(width)} | -------- | -------- | -------- |`,
    ...result.results.map(
      (r) =>
        `| ${r.model.padEnd(width)} | ${r.kind.padEnd(8)} | ${(r.accuracy * 100).toFixed(1).padStart(8)} | ${(r.macroF1 * 100).toFixed(1).padStart(8)} |`,
    ),
    '',
    result.summary,
  ];
  if (result.federated.length > 0) {
    lines.push(
      '',
      "Federated evaluation of the merged model: each owner's own held-out split, only the metrics reported (signed, in both ledgers):",
      ...result.federated.map(
        (f) =>
          `  ${f.owner.padEnd(6)} ${String(f.examples).padStart(5)} examples  accuracy ${pct(f.accuracy).padStart(7)}  macro-F1 ${pct(f.macroF1).padStart(7)}`,
      ),
    );
  }
  return lines.join('\n');
}

/** Runs one CLI child process; resolves its stdout, calls onStderrLine per stderr line. */
function runChild(args: readonly string[], what: string, onStderrLine?: (line: string) => void): Promise<string> {
  const child = spawn(process.execPath, [cliEntry, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  createInterface({ input: child.stderr }).on('line', (line) => {
    if (onStderrLine !== undefined && line.startsWith('{')) onStderrLine(line);
    else stderr += `${line}\n`;
  });
  return new Promise((resolveChild, reject) =>
    child.once('exit', (code) =>
      code === 0 ? resolveChild(stdout) : reject(new GramfuseError(ErrorCode.Internal, `${what} failed: ${stderr.trim()}`)),
    ),
  );
}

/** Per-owner progress from the agents' `--progress-json` lines, logged as one line every two seconds. */
function ownerProgress(orgs: readonly string[], log: (line: string) => void): { update(org: string, line: string): void; stop(): void } {
  const state = new Map<string, string>(orgs.map((o) => [o, 'planning']));
  const started = Date.now();
  const timer = setInterval(
    () => log(`${((Date.now() - started) / 1000).toFixed(0).padStart(3)} s  ${orgs.map((o) => `${o} ${state.get(o)}`).join(' · ')}`),
    2000,
  );
  return {
    update(org, line) {
      try {
        const p = JSON.parse(line) as { phase: string; done: number; total: number };
        const done = p.done >= p.total;
        state.set(
          org,
          p.phase === 'upload'
            ? done
              ? 'uploaded'
              : `uploading ${(p.done / 1e6).toFixed(1)}/${(p.total / 1e6).toFixed(1)} MB`
            : done
              ? 'collected'
              : `collecting ${p.done}/${p.total} examples`,
        );
      } catch {
        // not a progress line
      }
    },
    stop: () => clearInterval(timer),
  };
}

/** max over float parameters of max |a − b| / max |b|: how far model `a` is from model `b`. */
async function maxRelativeDifference(a: string, b: string): Promise<number> {
  const [ma, mb] = await Promise.all([loadModel(a), loadModel(b)]);
  return maxRelativeParameterDifference(ma, mb);
}

/** `gramfuse demo`: a coordinator and three agents (separate processes) on loopback with mTLS. */
export async function runDemo(options: DemoOptions): Promise<DemoResult> {
  const started = performance.now();
  const dir = options.out ?? (await mkdtemp(join(tmpdir(), 'gramfuse-demo-')));
  await mkdir(dir, { recursive: true });
  const certs = join(dir, 'certs');
  const orgs = ['org0', 'org1', 'org2'];
  options.log(`demo directory ${dir}: making a federation CA and certificates (coordinator, creator, ${orgs.join(', ')})`);
  await certsInit(certs, 'gramfuse demo CA');
  await certsIssue(certs, 'coordinator', ['localhost', '127.0.0.1']);
  await certsIssue(certs, 'creator', [], 'creator');
  for (const name of orgs) await certsIssue(certs, name, [], 'owner');
  const tls = (name: string): string[] => certsFlags(certs, name);
  const model = (org: string): string => join(DEMO_EXAMPLES, org, 'model.onnx');
  const tokenizer = join(DEMO_EXAMPLES, 'tokenizer.json');
  const labels = join(DEMO_EXAMPLES, 'labels.json');

  const coordinator = spawn(
    process.execPath,
    [
      cliEntry,
      'coordinator',
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--state',
      join(dir, 'coordinator'),
      '--creators',
      'creator',
      '--json',
      ...tls('coordinator'),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const coordinatorLog: string[] = [];
  coordinator.stderr.setEncoding('utf8').on('data', (d: string) => coordinatorLog.push(d));
  try {
    const port = await new Promise<number>((resolvePort, reject) => {
      createInterface({ input: coordinator.stdout }).once('line', (line) => resolvePort((JSON.parse(line) as { port: number }).port));
      coordinator.once('exit', (code) =>
        reject(new GramfuseError(ErrorCode.Unavailable, `the coordinator exited (code ${code}): ${coordinatorLog.join('')}`)),
      );
    });
    const address = `localhost:${port}`;
    options.log(`coordinator listening on ${address} (mTLS)`);
    const creatorTls = await loadTls({
      tlsCa: join(certs, 'ca.pem'),
      tlsCert: join(certs, 'creator.pem'),
      tlsKey: join(certs, 'creator-key.pem'),
    });
    const client = connectFederation({ address, tls: creatorTls });
    try {
      await client.createJob(
        JSON.stringify({
          id: 'demo',
          participants: orgs,
          merge: { method: 'regmean', alpha: 0.9 },
          ...(options.secureAggregation === true ? { privacy: { secureAggregation: true } } : {}),
        }),
        await readFile(model('org0')),
      );
      options.log(
        `job demo created: RegMean α 0.9 over ${orgs.join(', ')}${options.secureAggregation === true ? ' with secure aggregation (masked statistics, the coordinator sees only their sum)' : ''}; starting three agents (each collects on its own data, then uploads)`,
      );
      const progress = ownerProgress(orgs, options.log);
      try {
        await Promise.all(
          orgs.map((org) =>
            runChild(
              [
                'agent',
                'run',
                '--coordinator',
                address,
                '--job',
                'demo',
                '--model',
                model(org),
                '--data',
                join(DEMO_EXAMPLES, 'data', `${org}.train.jsonl`),
                '--tokenizer',
                tokenizer,
                '--work-dir',
                join(dir, org),
                '--yes',
                '--json',
                '--progress-json',
                '--device',
                'cpu',
                '--threads',
                '1',
                ...(options.maxExamples === undefined ? [] : ['--max-examples', String(options.maxExamples)]),
                ...tls(org),
              ],
              `agent ${org}`,
              (line) => progress.update(org, line),
            ),
          ),
        );
      } finally {
        progress.stop();
      }
      let lastState = '';
      const final = await client.watch('demo', (s) => {
        if (s.state !== lastState) options.log(`job demo: ${s.state} (${s.completed.length}/${s.quorum} owners)`);
        lastState = s.state;
      });
      if (final.state !== 'done')
        throw new GramfuseError(ErrorCode.SolveFailed, `job demo ${final.state}: ${final.failureCode}: ${final.failureMessage}`);
      const resultDir = join(dir, 'result');
      await mkdir(resultDir, { recursive: true });
      const mergedModel = join(resultDir, 'merged.onnx');
      const report = join(resultDir, 'report.json');
      const { sha256: mergedSha256 } = await downloadMergedModel(client, 'demo', mergedModel, final.resultSha256);
      await client.downloadTo('demo', 'report.json', report);
      options.log(`merged model downloaded to ${mergedModel} (sha256 verified); each agent evaluates it on its own held-out split`);
      const hf = await exportHfCheckpoint({
        model: mergedModel,
        out: join(resultDir, 'hf'),
        tokenizer,
        report: JSON.parse(await readFile(report, 'utf8')) as MergeReport,
        provenance: [`Job \`demo\`: merged.onnx SHA-256 \`${mergedSha256}\`, verified on download.`],
      });
      options.log(`merged model as a Hugging Face checkpoint: ${hf.out} (${hf.files.join(', ')}; names from the export's structure)`);
      // Federated evaluation in the agents' processes, while this one builds the baselines.
      const federatedRuns = Promise.all(
        orgs.map(async (org) => {
          const out = await runChild(
            [
              'agent',
              'evaluate',
              '--coordinator',
              address,
              '--job',
              'demo',
              '--data',
              join(DEMO_EXAMPLES, 'data', `${org}.heldout.jsonl`),
              '--tokenizer',
              tokenizer,
              '--labels',
              labels,
              '--work-dir',
              join(dir, org),
              '--threads',
              '1',
              '--json',
              ...tls(org),
            ],
            `agent evaluate ${org}`,
          );
          const r = JSON.parse(out) as FederatedEvaluation;
          return { owner: r.owner, examples: r.examples, accuracy: r.accuracy, macroF1: r.macroF1 };
        }),
      );
      const baselines: [string, MergeSpec][] = [
        ['average', MergeSpec.parse({ method: 'average' })],
        ['task-arithmetic', MergeSpec.parse({ method: 'task-arithmetic' })],
        ['ties', MergeSpec.parse({ method: 'ties' })],
      ];
      const baselinePaths: string[] = [];
      for (const [name, spec] of baselines) {
        const out = join(resultDir, `${name}.onnx`);
        await runLocalMerge({ models: orgs.map(model), data: [], spec, base: join(DEMO_EXAMPLES, 'base', 'model.onnx'), out });
        baselinePaths.push(out);
      }
      // Secure aggregation: the same pipeline over the owners' own plaintext bundles, to show what masking cost.
      let maxRelDiffVsPlain: number | undefined;
      if (options.secureAggregation === true) {
        const plain = join(resultDir, 'plaintext-regmean.onnx');
        await runLocalMerge({
          models: [],
          data: [],
          bundles: orgs.map((org) => join(dir, org, 'demo', 'bundle')),
          template: model('org0'),
          spec: MergeSpec.parse({ method: 'regmean', alpha: 0.9 }),
          out: plain,
        });
        maxRelDiffVsPlain = await maxRelativeDifference(mergedModel, plain);
        options.log(`largest relative difference to the plaintext merge of the same statistics: ${maxRelDiffVsPlain.toExponential(2)}`);
      }
      const federated = await federatedRuns;
      options.log('evaluating every model on the English test split');
      const names = [...orgs, ...baselines.map(([n]) => n), 'regmean'];
      const evaluated = await evaluateEach([...orgs.map(model), ...baselinePaths, mergedModel], {
        data: join(DEMO_EXAMPLES, 'data', 'test.en.jsonl'),
        tokenizer,
        labels,
        ensembleOf: orgs.map(model),
        ...(options.maxTestExamples === undefined ? {} : { maxExamples: options.maxTestExamples }),
      });
      const rows: DemoRow[] = evaluated.map((r, i) => ({
        model: names[i]!,
        kind: i < orgs.length ? 'org' : 'merge',
        accuracy: r.accuracy,
        macroF1: r.macroF1,
      }));
      const ensemble = evaluated[0]!.ensemble!;
      rows.push({ model: `ensemble (${orgs.length} models)`, kind: 'ensemble', accuracy: ensemble.accuracy, macroF1: ensemble.macroF1 });
      rows.sort((a, b) => b.accuracy - a.accuracy || b.macroF1 - a.macroF1);
      const ledgers = { coordinator: join(dir, 'coordinator', 'audit.jsonl'), agents: orgs.map((o) => join(dir, o, 'audit.jsonl')) };
      const verify: string[] = [];
      for (const ledger of [ledgers.coordinator, ...ledgers.agents]) verify.push(`audit verify: ${await auditVerify(ledger)}`);
      for (const agentLedger of ledgers.agents)
        verify.push(`audit reconcile: ${formatReconciliation(await auditReconcile(agentLedger, ledgers.coordinator))}`);
      return {
        results: rows,
        federated,
        summary: summarizeDemo(rows),
        mergedModel,
        mergedSha256,
        hfCheckpoint: hf.out,
        report,
        ledgers,
        verify,
        ...(maxRelDiffVsPlain === undefined ? {} : { maxRelDiffVsPlain }),
        seconds: (performance.now() - started) / 1000,
      };
    } finally {
      client.close();
    }
  } finally {
    coordinator.kill('SIGTERM');
  }
}
