// bench/scale: an end-to-end federated RegMean merge of a synthetic BERT-base-size model (hidden 768, FFN 3072,
// 12 layers; written as ONNX by bench/synthetic-bert.ts) with 3 and with 6 agents on loopback. The coordinator
// and every agent are separate `gramfuse` processes; the bench reports wall time per phase, bytes on the wire
// and peak RSS of the coordinator (VmHWM from /proc, read before it stops) and of the largest agent (the OS's
// maxRSS as the agent reports it). Agents run one after another, so phases do not compete for the 2 cores.
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

import { connectFederation } from '../client/index.js';
import { formatBytes } from '../shared/index.js';
import { loadModel, analyzeModel } from '../shared/onnx/index.js';
import { type BenchContext, table } from './harness.js';
import { runGramfuse, startCoordinator } from './processes.js';
import { BERT_BASE, writeSyntheticBert } from './synthetic-bert.js';
import { DECODER_PRESETS, type DecoderPreset, writeSyntheticDecoder } from './synthetic-decoder.js';

const repo = resolve(import.meta.dirname, '..');
const fixtures = resolve(repo, '../shared/fixtures');

async function rssMb(pid: number, field: 'VmHWM' | 'VmRSS'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kb = new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1];
  return kb === undefined ? Number.NaN : Number(kb) / 1024;
}

/** Samples a process's resident memory every 100 ms and keeps the largest value per phase label. */
function sampler(pid: number): { phase: string; peaks: Map<string, number>; stop: () => void } {
  const state = { phase: 'start', peaks: new Map<string, number>(), stop: () => undefined as void };
  const timer = setInterval(() => {
    void rssMb(pid, 'VmRSS').then((mb) => {
      if (Number.isFinite(mb)) state.peaks.set(state.phase, Math.max(state.peaks.get(state.phase) ?? 0, mb));
    });
  }, 100);
  state.stop = () => clearInterval(timer);
  return state;
}

interface ScaleResult {
  agents: number;
  seconds: { collect: number; upload: number; aggregate: number; solve: number; write: number; total: number };
  wireBytes: number;
  coordinatorPeakRssMb: number;
  /** Sampled coordinator RSS peaks per phase (job creation, uploads, solve and write). */
  coordinatorRssMbByPhase: Record<string, number>;
  agentPeakRssMb: number;
  /** The agents' memory target: model + 1.5 × the largest collection pass + 500 MiB (the largest over agents). */
  agentBudgetMb: number;
  agentPasses: number;
}

async function federatedMerge(dir: string, model: string, agents: number, examples: number): Promise<ScaleResult> {
  const state = join(dir, `state-${agents}`);
  const coordinator = await startCoordinator([
    '--state',
    state,
    '--insecure-loopback',
    '--creators',
    'creator',
    // The template is named by path (the coordinator reads it from disk): its directory must be allowed.
    '--template-dir',
    dirname(model),
  ]);
  const port = coordinator.port;
  const started = performance.now();
  const memory = sampler(coordinator.process.pid!);
  try {
    memory.phase = 'create job';
    const owners = Array.from({ length: agents }, (_, i) => `org${i}`);
    const creator = connectFederation({ address: `127.0.0.1:${port}`, insecureIdentity: 'creator' });
    await creator.createJob(
      JSON.stringify({
        id: 'scale',
        participants: owners,
        policy: { minRowsPerGroup: 1 },
        merge: { method: 'regmean', alpha: 0.9 },
        // A 0.5B decoder's statistics are ≈ 3.2 GB per owner: the default 8 GiB job budget holds two owners.
        limits: { maxJobBytes: 64 * 1024 ** 3 },
      }),
      { path: model },
    );
    let collect = 0;
    let upload = 0;
    let wireBytes = 0;
    let agentPeak = 0;
    let agentBudget = 0;
    let agentPasses = 0;
    memory.phase = 'uploads';
    for (const [i, owner] of owners.entries()) {
      if (i === owners.length - 1) memory.phase = 'last upload, solve, write';
      const result = await runGramfuse([
        'agent',
        'run',
        '--coordinator',
        `127.0.0.1:${port}`,
        '--insecure-loopback',
        '--identity',
        owner,
        '--job',
        'scale',
        '--model',
        model,
        '--data',
        join(fixtures, 'scenarios', 'label-skew', `org${i % 5}.jsonl`),
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
        join(dir, `agents-${agents}`, owner),
        // The owner's own policy is final: a synthetic benchmark owner allows Grams of a single row.
        '--min-rows',
        '1',
        '--yes',
        '--json',
      ]);
      if (result.code !== 0) throw new Error(`agent ${owner} failed:\n${result.stderr}`);
      const summary = JSON.parse(result.stdout) as {
        bytesSent: number;
        seconds: { collect: number; upload: number };
        peakRssMb: number;
        memory?: { passes: number; memoryTargetMb: number };
      };
      agentBudget = Math.max(agentBudget, summary.memory?.memoryTargetMb ?? 0);
      agentPasses = Math.max(agentPasses, summary.memory?.passes ?? 0);
      collect += summary.seconds.collect;
      upload += summary.seconds.upload;
      wireBytes += summary.bytesSent;
      agentPeak = Math.max(agentPeak, summary.peakRssMb);
    }
    const final = await creator.watch('scale', () => undefined);
    if (final.state !== 'done') throw new Error(`job scale ${final.state}: ${final.failureMessage}\n${coordinator.log()}`);
    const report = JSON.parse((await creator.download('scale', 'report.json')).toString('utf8')) as {
      seconds: { aggregate?: number; solve: number; write: number };
    };
    creator.close();
    const coordinatorPeak = await rssMb(coordinator.process.pid!, 'VmHWM');
    return {
      agents,
      seconds: {
        collect,
        upload,
        aggregate: report.seconds.aggregate ?? 0,
        solve: report.seconds.solve,
        write: report.seconds.write,
        total: (performance.now() - started) / 1000,
      },
      wireBytes,
      coordinatorPeakRssMb: coordinatorPeak,
      coordinatorRssMbByPhase: Object.fromEntries([...memory.peaks].map(([k, v]) => [k, Math.round(v)])),
      agentPeakRssMb: agentPeak,
      agentBudgetMb: agentBudget,
      agentPasses,
    };
  } finally {
    memory.stop();
    await coordinator.stop();
    await rm(state, { recursive: true, force: true });
    await rm(join(dir, `agents-${agents}`), { recursive: true, force: true });
  }
}

export async function benchScale(context: BenchContext): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'gramfuse-bench-scale-'));
  try {
    // --arch bert-base (default) or a decoder preset (bench/synthetic-decoder.ts); --agents N (default: 3 and 6).
    const arch = context.option('arch') ?? 'bert-base';
    if (arch !== 'bert-base' && !(arch in DECODER_PRESETS))
      throw new Error(`bench scale: unknown --arch ${arch}; choose bert-base or ${Object.keys(DECODER_PRESETS).join(', ')}`);
    const agentCounts = context.option('agents') === undefined ? [3, 6] : [Number(context.option('agents'))];
    if (agentCounts.some((n) => !Number.isInteger(n) || n < 1)) throw new Error('bench scale: --agents must be a whole number ≥ 1');
    const options = context.quick ? { ...BERT_BASE, layers: 2 } : BERT_BASE;
    const decoder = arch === 'bert-base' ? undefined : DECODER_PRESETS[arch as DecoderPreset];
    const model = join(dir, arch === 'bert-base' ? 'synthetic-bert.onnx' : `synthetic-${arch}.onnx`);
    if (decoder === undefined) await writeSyntheticBert(model, options);
    else await writeSyntheticDecoder(model, context.quick ? { ...decoder, layers: 2 } : decoder, true);
    const modelBytes =
      (await stat(model)).size +
      (await stat(`${model}.data`)
        .then((s) => s.size)
        .catch(() => 0));
    const analysis = await analyzeModel(await loadModel(model));
    const largestGroup = Math.max(...analysis.gramGroups.map((g) => g.inDim));
    const largestGramMb = (largestGroup * largestGroup * 8) / 1024 ** 2;
    // Few examples: the bench is about the coordinator (its memory and phases), not collection speed (bench/collect).
    const examples = 8;
    const results: ScaleResult[] = [];
    for (const agents of agentCounts) {
      const r = await federatedMerge(dir, model, agents, examples);
      results.push(r);
      context.emit({
        bench: 'scale',
        arch,
        layers: decoder?.layers ?? options.layers,
        hidden: decoder?.hidden ?? options.hidden,
        ffn: decoder?.ffn ?? options.ffn,
        examplesPerAgent: examples,
        budgetMb: 3 * largestGramMb + modelBytes / 1024 ** 2,
        coordinatorBudgetMb: 3 * largestGramMb + modelBytes / 1024 ** 2,
        ...r,
      });
    }
    const budgetMb = 3 * largestGramMb + modelBytes / 1024 ** 2;
    const [three, six] = [results[0]!, results[1] ?? results[0]!];
    const described =
      decoder === undefined
        ? `synthetic BERT (${options.layers} layers, hidden ${options.hidden}, FFN ${options.ffn}, vocab ${options.vocab}; ${formatBytes(modelBytes)})`
        : `synthetic ${arch} (${context.quick ? 2 : decoder.layers} layers, hidden ${decoder.hidden}, ${decoder.heads}/${decoder.kvHeads} heads, FFN ${decoder.ffn}, vocab ${decoder.vocab}${decoder.tied ? ', tied' : ''}; ${formatBytes(modelBytes)})`;
    context.print(
      [
        `scale — ${described}, ` + `${examples} examples × 64 tokens per agent, float32 statistics, loopback, agents one after another`,
        table(
          [
            'agents',
            'collect s',
            'upload s',
            'aggregate s',
            'solve s',
            'write s',
            'total s',
            'wire',
            'coordinator peak RSS MB',
            'agent peak RSS MB',
            'agent target MB',
            'passes',
          ],
          results.map((r) => [
            r.agents,
            r.seconds.collect.toFixed(1),
            r.seconds.upload.toFixed(1),
            r.seconds.aggregate.toFixed(1),
            r.seconds.solve.toFixed(1),
            r.seconds.write.toFixed(1),
            r.seconds.total.toFixed(1),
            formatBytes(r.wireBytes),
            r.coordinatorPeakRssMb.toFixed(0),
            r.agentPeakRssMb.toFixed(0),
            r.agentBudgetMb.toFixed(0),
            r.agentPasses,
          ]),
        ),
        `coordinator peak RSS, ${six.agents} agents / ${three.agents} agents: ${(six.coordinatorPeakRssMb / three.coordinatorPeakRssMb).toFixed(2)} (goal ≤ 1.1); ` +
          `budget 3 × largest Gram group (${largestGroup}², float64: ${largestGramMb.toFixed(0)} MB) + model = ${budgetMb.toFixed(0)} MB: ` +
          `${three.agents} agents ${three.coordinatorPeakRssMb.toFixed(0)} MB, ${six.agents} agents ${six.coordinatorPeakRssMb.toFixed(0)} MB`,
        `coordinator RSS peaks by phase (sampled every 100 ms): ${results
          .map(
            (r) =>
              `${r.agents} agents: ${Object.entries(r.coordinatorRssMbByPhase)
                .map(([k, v]) => `${k} ${v} MB`)
                .join(', ')}`,
          )
          .join('; ')}`,
      ].join('\n'),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
