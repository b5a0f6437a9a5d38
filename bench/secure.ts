// bench/secure: a securely aggregated job against the plaintext job of the same owners, statistics and settings
// (issue #18), on a real mTLS coordinator process with agent processes running at once (the secure rounds need them
// together; the plaintext job runs the same way, so the ratio compares like with like). Models: the example BERT-mini
// (label-skew-v1 orgs, 300 examples each) and the synthetic BERT-base-size model (8 examples × 64 tokens, float32
// statistics, as bench scale). Reported: total time from job creation to done (collection included, the same in
// both), the agents' join-to-receipts time, masking throughput, the coordinator's unmasking time, bytes on the wire
// per owner, and the largest relative difference between the two merged models.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

import { connectFederation } from '../client/index.js';
import { formatBytes } from '../shared/index.js';
import { readLedgerRecords } from '../shared/audit/index.js';
import { loadModel, maxRelativeParameterDifference } from '../shared/onnx/index.js';
import { certsFlags, certsInit, certsIssue, loadTls } from '../cli/index.js';
import { type BenchContext, table } from './harness.js';
import { runGramfuse, startCoordinator } from './processes.js';
import { BERT_BASE, writeSyntheticBert } from './synthetic-bert.js';

const repo = resolve(import.meta.dirname, '..');
const examples = join(repo, 'examples', 'label-skew-v1');

interface Owner {
  readonly name: string;
  readonly model: string;
  readonly data: string;
}

interface JobRun {
  readonly seconds: number;
  /** Per agent: join + (secure rounds, masking) + upload + receipts (+ reveal), the mean over agents. */
  readonly agentUploadSeconds: number;
  readonly wireBytesPerOwner: number;
  readonly maskedEntries: number;
  readonly maskSeconds: number;
  /** Coordinator: from the unmasking request to the unmasked sums written (secure jobs). */
  readonly unmaskSeconds: number;
  readonly model: string;
}

/** max over float parameters of max |a − b| / max |b|: how far model `a` is from model `b`. */
async function maxRelativeDifference(a: string, b: string): Promise<number> {
  const [ma, mb] = await Promise.all([loadModel(a), loadModel(b)]);
  return maxRelativeParameterDifference(ma, mb);
}

export async function benchSecure(context: BenchContext): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'gramfuse-bench-secure-'));
  // The federation's certificates as `gramfuse certs init` / `certs issue` make them (as the demo does).
  const certs = join(dir, 'certs');
  await certsInit(certs, 'bench secure CA');
  await certsIssue(certs, 'coordinator', ['localhost', '127.0.0.1']);
  for (const name of ['creator', ...Array.from({ length: 5 }, (_, i) => `owner${i}`)]) await certsIssue(certs, name, []);
  const tlsFlags = (name: string) => ({
    tlsCa: join(certs, 'ca.pem'),
    tlsCert: join(certs, `${name}.pem`),
    tlsKey: join(certs, `${name}-key.pem`),
  });
  const tls = (name: string): string[] => certsFlags(certs, name);
  const creatorTls = await loadTls(tlsFlags('creator'));
  const base = join(dir, 'synthetic-bert.onnx');
  const baseOptions = context.quick ? { ...BERT_BASE, layers: 2 } : BERT_BASE;
  await writeSyntheticBert(base, baseOptions);
  const models: { name: string; template: string; owners: (n: number) => Owner[]; collect: string[] }[] = [
    {
      name: 'bert-mini',
      template: join(examples, 'org0', 'model.onnx'),
      owners: (n) =>
        Array.from({ length: n }, (_, i) => ({
          name: `owner${i}`,
          model: join(examples, `org${i % 3}`, 'model.onnx'),
          data: join(examples, 'data', i < 3 ? `org${i}.train.jsonl` : `org${i % 3}.heldout.jsonl`),
        })),
      collect: ['--max-examples', '300', '--tokenizer', join(examples, 'tokenizer.json')],
    },
    {
      name: 'bert-base',
      template: base,
      owners: (n) =>
        Array.from({ length: n }, (_, i) => ({
          name: `owner${i}`,
          model: base,
          data: join(examples, 'data', i < 3 ? `org${i}.train.jsonl` : `org${i % 3}.heldout.jsonl`),
        })),
      collect: [
        '--max-examples',
        '8',
        '--max-length',
        '64',
        '--dtype',
        'float32',
        '--min-rows',
        '1',
        '--tokenizer',
        join(examples, 'tokenizer.json'),
      ],
    },
  ];
  const wanted = context.option('model');
  const ownerCounts = context.option('owners') === undefined ? [3, 5] : [Number(context.option('owners'))];
  const rows: (string | number)[][] = [];
  try {
    for (const m of models.filter((x) => wanted === undefined || x.name === wanted)) {
      const state = join(dir, `state-${m.name}`);
      const coordinator = await startCoordinator([
        '--state',
        state,
        '--creators',
        'creator',
        '--template-dir',
        dirname(m.template),
        ...tls('coordinator'),
      ]);
      const port = coordinator.port;
      const address = `localhost:${port}`;
      const client = connectFederation({ address, tls: creatorTls });
      try {
        const job = async (id: string, owners: Owner[], secure: boolean): Promise<JobRun> => {
          const started = performance.now();
          await client.createJob(
            JSON.stringify({
              id,
              participants: owners.map((o) => o.name),
              policy: { minRowsPerGroup: 1 },
              limits: { maxJobBytes: 64 * 1024 ** 3 },
              ...(secure ? { privacy: { secureAggregation: true, roundTimeoutSeconds: 600 } } : {}),
            }),
            { path: m.template },
          );
          const results = await Promise.all(
            owners.map((o) =>
              runGramfuse([
                'agent',
                'run',
                '--coordinator',
                address,
                '--job',
                id,
                '--model',
                o.model,
                '--data',
                o.data,
                ...m.collect,
                '--threads',
                '1',
                '--work-dir',
                join(dir, 'agents', m.name, o.name),
                '--yes',
                '--json',
                ...tls(o.name),
              ]),
            ),
          );
          for (const r of results) if (r.code !== 0) throw new Error(`agent of job ${id} failed:\n${r.stderr}\n${coordinator.log()}`);
          const final = await client.watch(id, () => undefined);
          if (final.state !== 'done') throw new Error(`job ${id} ${final.state}: ${final.failureMessage}\n${coordinator.log()}`);
          const seconds = (performance.now() - started) / 1000;
          const summaries = results.map(
            (r) =>
              JSON.parse(r.stdout) as {
                bytesSent: number;
                seconds: { upload: number };
                secureAggregation?: { maskedEntries: number; maskSeconds: number };
              },
          );
          const records = (await readLedgerRecords(join(state, 'audit.jsonl'))).map((r) => r.record).filter((r) => r.job === id);
          const at = (phase: string): number =>
            Date.parse(records.find((r) => r.kind === 'secure.round' && r.facts.phase === phase)?.time ?? '');
          const model = join(dir, `${id}.onnx`);
          await writeFile(model, await client.download(id, 'merged.onnx'));
          return {
            seconds,
            agentUploadSeconds: summaries.reduce((s, x) => s + x.seconds.upload, 0) / summaries.length,
            wireBytesPerOwner: summaries.reduce((s, x) => s + x.bytesSent, 0) / summaries.length,
            maskedEntries: summaries.reduce((s, x) => s + (x.secureAggregation?.maskedEntries ?? 0), 0),
            maskSeconds: summaries.reduce((s, x) => s + (x.secureAggregation?.maskSeconds ?? 0), 0),
            unmaskSeconds: secure ? (at('summed') - at('unmasking')) / 1000 : 0,
            model,
          };
        };
        for (const n of ownerCounts) {
          const owners = m.owners(n);
          const plain = await job(`plain-${n}`, owners, false);
          const secure = await job(`secure-${n}`, owners, true);
          const maxRelDiff = await maxRelativeDifference(secure.model, plain.model);
          const maskRate = secure.maskSeconds === 0 ? 0 : secure.maskedEntries / secure.maskSeconds;
          context.emit({
            bench: 'secure',
            owners: n,
            model: m.name,
            secureSeconds: secure.seconds,
            plainSeconds: plain.seconds,
            ratio: secure.seconds / plain.seconds,
            agentUploadSeconds: { secure: secure.agentUploadSeconds, plain: plain.agentUploadSeconds },
            maskEntriesPerSecond: maskRate,
            unmaskSeconds: secure.unmaskSeconds,
            maxRelDiff,
            wireBytesPerOwner: secure.wireBytesPerOwner,
            plainWireBytesPerOwner: plain.wireBytesPerOwner,
          });
          rows.push([
            m.name,
            n,
            plain.seconds.toFixed(1),
            secure.seconds.toFixed(1),
            (secure.seconds / plain.seconds).toFixed(2),
            `${plain.agentUploadSeconds.toFixed(1)} / ${secure.agentUploadSeconds.toFixed(1)}`,
            `${(maskRate / 1e6).toFixed(1)} M/s`,
            secure.unmaskSeconds.toFixed(1),
            `${formatBytes(plain.wireBytesPerOwner)} / ${formatBytes(secure.wireBytesPerOwner)}`,
            maxRelDiff.toExponential(1),
          ]);
        }
      } finally {
        client.close();
        await coordinator.stop();
        await rm(state, { recursive: true, force: true });
        await rm(join(dir, 'agents', m.name), { recursive: true, force: true });
      }
    }
    context.print(
      [
        `secure — secure aggregation vs the plaintext job of the same owners, mTLS on loopback, agents at once (BERT-mini: label-skew-v1 models, 300 examples each; BERT-base: synthetic ${baseOptions.layers} layers, 8 examples × 64 tokens, float32 statistics)`,
        table(
          [
            'model',
            'owners',
            'plain s',
            'secure s',
            'ratio (goal ≤ 2)',
            'agent join→receipts s plain / secure',
            'masking',
            'unmask s',
            'wire per owner plain / secure',
            'max rel. diff',
          ],
          rows,
        ),
      ].join('\n'),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
