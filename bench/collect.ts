// bench/collect: statistics collection (instrumented graph + float64 accumulation) C against what it cannot avoid,
// measured in the same run on the same batches, threads and data: plain inference of the model P, and the same Gram
// products alone G (a standalone onnxruntime graph with one float32 XᵀX Gemm per tapped tensor, fed activations of
// the shapes collection sees). The overhead C / (P + G) is the verdict (goal <= 1.1); collect/plain is kept for reference.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import {
  buildFeeds,
  collectExamples,
  collectGramStatistics,
  type CollectTimings,
  inputRoles,
  lengthBatches,
  loadTokenizer,
} from '../agent/index.js';
import { GraphProto, ModelProto, NodeProto, ValueInfoProto } from '../proto/index.js';
import { analyzeModel, createSession, loadModel, OrtTensor, runSession, type Tensor } from '../shared/onnx/index.js';
import { type BenchContext, median, table } from './harness.js';
import { BERT_BASE, writeSyntheticBert } from './synthetic-bert.js';

const FLOAT = 1;

/** One float32 Gram Gemm(Xᵀ, X) per tapped tensor of width d: inputs `x<k>` [rows, d], outputs `g<k>` [d, d]. */
function gramOnlyModel(dims: readonly number[]): Uint8Array {
  const graph = GraphProto.fromPartial({
    name: 'grams_alone',
    node: dims.map((_, k) =>
      NodeProto.fromPartial({
        opType: 'Gemm',
        input: [`x${k}`, `x${k}`],
        output: [`g${k}`],
        name: `gram${k}`,
        attribute: [{ name: 'transA', type: 2, i: 1n }],
      }),
    ),
    input: dims.map((d, k) =>
      ValueInfoProto.fromPartial({
        name: `x${k}`,
        type: { tensorType: { elemType: FLOAT, shape: { dim: [{ dimParam: 'rows' }, { dimValue: BigInt(d) }] } } },
      }),
    ),
    output: dims.map((d, k) =>
      ValueInfoProto.fromPartial({
        name: `g${k}`,
        type: { tensorType: { elemType: FLOAT, shape: { dim: [{ dimValue: BigInt(d) }, { dimValue: BigInt(d) }] } } },
      }),
    ),
  });
  return ModelProto.encode(ModelProto.fromPartial({ irVersion: 8n, opsetImport: [{ domain: '', version: 17n }], graph })).finish();
}

const fixtures = resolve(import.meta.dirname, '../../shared/fixtures');

export async function benchCollect(context: BenchContext): Promise<void> {
  const scratch = await mkdtemp(join(tmpdir(), 'gramfuse-bench-collect-'));
  const cases: { name: string; model: string; data: string; maxExamples?: number }[] = [
    {
      name: 'label-skew/org0',
      model: `${fixtures}/models/label-skew/org0/model.onnx`,
      data: `${fixtures}/scenarios/label-skew/org0.jsonl`,
    },
    { name: 'languages/de', model: `${fixtures}/models/languages/de/model.onnx`, data: `${fixtures}/scenarios/languages/de.jsonl` },
  ];
  if (!context.quick) {
    // The size users fuse (Grams of order 768 and 3072): the synthetic BERT-base of bench scale, at two sample sizes,
    // so that what collection pays once (its session, first touching 1.6 GB of float64 accumulators, the final mirror)
    // can be told from what it pays per token: the difference between the two runs has no one-time part.
    await writeSyntheticBert(join(scratch, 'bert-base.onnx'), BERT_BASE);
    for (const maxExamples of [48, 144])
      cases.push({
        name: `synthetic BERT-base ×${maxExamples}`,
        model: join(scratch, 'bert-base.onnx'),
        data: `${fixtures}/scenarios/label-skew/org0.jsonl`,
        maxExamples,
      });
  }
  const tokenizer = await loadTokenizer(`${fixtures}/tokenizer/tokenizer.json`, { maxLength: 128 });
  const batchSize = 32;
  const rows: (string | number)[][] = [];
  const breakdown: string[][] = [];
  for (const c of cases) {
    const model = await loadModel(c.model);
    const analysis = await analyzeModel(model);
    const examples = await collectExamples(
      c.data,
      context.quick
        ? { maxExamples: Math.min(400, c.maxExamples ?? 400) }
        : { ...(c.maxExamples === undefined ? {} : { maxExamples: c.maxExamples }) },
    );
    const encoded = examples.map((e) => tokenizer.encode(e.text, e.pair));
    const tokens = encoded.reduce((s, e) => s + e.ids.length, 0);
    const roles = inputRoles(analysis.inputs);
    // Each of P, G and C creates (and releases) its onnxruntime session inside its timing (C builds its instrumented
    // graph and session in collectGramStatistics), so the three do alike. Each run's phases are kept too, so that what
    // C adds over P + G can be broken down: sessions, inputs (tokenizing, batching, input tensors), onnxruntime's runs,
    // and C's float64 accumulation and final mirror.
    type Phases = Record<string, number>;
    const phases = { plain: [] as Phases[], grams: [] as Phases[], collect: [] as Phases[] };
    /** A stopwatch over `times`: each call adds the time since the last one to that phase. */
    const laps = (times: Phases): ((phase: string) => void) => {
      let clock = performance.now();
      return (phase) => {
        const now = performance.now();
        times[phase]! += now - clock;
        clock = now;
      };
    };
    const plainRun = async (): Promise<void> => {
      const times: Phases = { session: 0, inputs: 0, run: 0 };
      const lap = laps(times);
      const plain = await createSession(model, { intraOpThreads: context.threads });
      lap('session');
      // Tokenized here too, so both sides do the same work apart from the statistics.
      const fresh = examples.map((e) => tokenizer.encode(e.text, e.pair));
      for (const batch of lengthBatches(fresh, batchSize)) {
        const feeds = buildFeeds(
          batch.map((i) => fresh[i]!),
          analysis.inputs,
          roles,
          tokenizer.padId,
        );
        lap('inputs');
        await runSession(plain, feeds, c.name);
        lap('run');
      }
      await plain.release();
      lap('session');
      phases.plain.push(times);
    };
    // The Gram products alone: every distinct tapped tensor once (as the instrumented graph computes it), on
    // activations of the batch's shape ([batch × padded length, d]: padding rows too, an upper bound on what
    // collection multiplies), written into reused output buffers as collection's are.
    const widths = new Map<string, number>();
    for (const group of analysis.gramGroups) for (const tensor of group.inputs) widths.set(tensor, group.inDim);
    const dims = [...widths.values()];
    const batchRows = lengthBatches(encoded, batchSize).map(
      (batch) => batch.length * Math.max(...batch.map((i) => encoded[i]!.ids.length)),
    );
    const maxRows = Math.max(...batchRows);
    const activations = dims.map((d) => Float32Array.from({ length: maxRows * d }, (_, i) => Math.sin(i * 0.618)));
    const gramFetches: Record<string, Tensor> = {};
    dims.forEach((d, k) => (gramFetches[`g${k}`] = new OrtTensor('float32', new Float32Array(d * d), [d, d])));
    const gramRun = async (): Promise<void> => {
      const times: Phases = { session: 0, run: 0 };
      const lap = laps(times);
      const grams = await createSession(gramOnlyModel(dims), { intraOpThreads: context.threads });
      lap('session');
      for (const rowsInBatch of batchRows) {
        const feeds: Record<string, Tensor> = {};
        dims.forEach((d, k) => (feeds[`x${k}`] = new OrtTensor('float32', activations[k]!.subarray(0, rowsInBatch * d), [rowsInBatch, d])));
        await runSession(grams, feeds, 'grams alone', gramFetches);
      }
      lap('run');
      await grams.release();
      lap('session');
      phases.grams.push(times);
    };
    const collectRun = async (): Promise<void> => {
      const timings: CollectTimings = { session: 0, inputs: 0, run: 0, accumulate: 0, mirror: 0 };
      await collectGramStatistics(model, analysis, tokenizer, examples, { batchSize, intraOpThreads: context.threads, timings });
      phases.collect.push({ ...timings });
    };
    const plainTimes: number[] = [];
    const gramTimes: number[] = [];
    const collectTimes: number[] = [];
    await plainRun(); // warm-up
    await gramRun();
    phases.plain.length = 0;
    phases.grams.length = 0;
    // Five runs of the fixture models (seconds each, and ±15 % apart between runs on this shared machine), three of the larger model.
    for (let run = 0; run < (context.quick ? 2 : c.maxExamples === undefined ? 5 : 3); run++) {
      // Interleaved, so load on the machine hits all three alike.
      let t = performance.now();
      await plainRun();
      plainTimes.push(performance.now() - t);
      t = performance.now();
      await gramRun();
      gramTimes.push(performance.now() - t);
      t = performance.now();
      await collectRun();
      collectTimes.push(performance.now() - t);
    }
    // Each phase's median over the runs, in seconds.
    const medianPhases = (runs: Phases[]): Phases =>
      Object.fromEntries(Object.keys(runs[0]!).map((phase) => [phase, median(runs.map((r) => r[phase]!)) / 1000]));
    const phaseSeconds = { plain: medianPhases(phases.plain), grams: medianPhases(phases.grams), collect: medianPhases(phases.collect) };
    const plainSeconds = median(plainTimes) / 1000;
    const gramSeconds = median(gramTimes) / 1000;
    const collectSeconds = median(collectTimes) / 1000;
    const baselineTokensPerSecond = tokens / plainSeconds;
    const tokensPerSecond = tokens / collectSeconds;
    const overhead = collectSeconds / (plainSeconds + gramSeconds);
    context.emit({
      bench: 'collect',
      model: c.name,
      examples: examples.length,
      tokens,
      batchSize,
      threads: context.threads,
      grams: dims.length,
      plainSeconds,
      gramSeconds,
      collectSeconds,
      overhead,
      setupSeconds: { plain: phaseSeconds.plain.session, grams: phaseSeconds.grams.session, collect: phaseSeconds.collect.session },
      phaseSeconds,
      tokensPerSecond,
      baselineTokensPerSecond,
      ratio: tokensPerSecond / baselineTokensPerSecond,
    });
    rows.push([
      c.name,
      examples.length,
      tokens,
      dims.length,
      plainSeconds.toFixed(2),
      gramSeconds.toFixed(2),
      (plainSeconds + gramSeconds).toFixed(2),
      collectSeconds.toFixed(2),
      overhead.toFixed(2),
      (tokensPerSecond / baselineTokensPerSecond).toFixed(2),
      [phaseSeconds.plain, phaseSeconds.grams, phaseSeconds.collect].map((x) => x.session!.toFixed(2)).join(' / '),
    ]);
    const p = phaseSeconds.plain;
    const g = phaseSeconds.grams;
    const k = phaseSeconds.collect;
    breakdown.push([
      c.name,
      (collectSeconds - plainSeconds - gramSeconds).toFixed(2),
      (k.session! - p.session! - g.session!).toFixed(2),
      (k.inputs! - p.inputs!).toFixed(2),
      `${k.run!.toFixed(2)} − ${p.run!.toFixed(2)} − ${g.run!.toFixed(2)} = ${(k.run! - p.run! - g.run!).toFixed(2)}`,
      k.accumulate!.toFixed(2),
      k.mirror!.toFixed(2),
    ]);
  }
  context.print(
    `collect: statistics collection C vs plain inference P and the same Gram products alone G (standalone onnxruntime float32 Gemm graph, one XᵀX per tapped tensor, on the batches' activation shapes), batch ${batchSize}, ${context.threads} threads, length-bucketed batches (medians of 5 runs, 3 for BERT-base; P and C include tokenization, each of P, G, C its session's creation)\n` +
      table(
        ['model', 'examples', 'tokens', 'Grams', 'P s', 'G s', 'P+G s', 'C s', 'C/(P+G)', 'collect/plain', 'sessions P / G / C s'],
        rows,
      ) +
      '\ngoal: C/(P+G) <= 1.1 (collect/plain >= 0.8 cannot be met on CPU: the Grams cost as much arithmetic as the model); G is the full XᵀX product, C computes a Gram of order ≥ 256 as its upper block triangle (shared/onnx gramBands)' +
      '\n\nwhere C − (P + G) goes (seconds, each phase the median of its runs, so the columns need not add up exactly)\n' +
      table(['model', 'C − (P+G)', 'sessions C − P − G', 'inputs C − P', 'onnxruntime runs C − P − G', 'accumulate', 'mirror'], breakdown) +
      "\nsessions: creating (C: instrumenting the graph too) and releasing each onnxruntime session; inputs: tokenizing, length-bucketing, input tensors; onnxruntime runs: P the model, G the Gram Gemms alone, C the instrumented graph (the model up to its last Gram input, the masks, casts and the Grams as upper-triangle bands); accumulate: adding each batch's float32 bands into the float64 accumulators (first touching them included); mirror: the upper triangles copied into the lower ones at the end",
  );
  await rm(scratch, { recursive: true, force: true });
}
