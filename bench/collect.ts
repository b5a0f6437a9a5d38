// bench/collect: statistics collection (instrumented graph + float64 accumulation) C against what it cannot avoid,
// measured in the same run on the same batches, threads and data: plain inference of the model P, and the same Gram
// products alone G (a standalone onnxruntime graph with one float32 XᵀX Gemm per tapped tensor, fed activations of
// the shapes collection sees). The overhead C / (P + G) is the verdict (goal <= 1.1); collect/plain is kept for reference.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { buildFeeds, collectExamples, collectGramStatistics, inputRoles, lengthBatches, loadTokenizer } from '../agent/index.js';
import { GraphProto, ModelProto, NodeProto, ValueInfoProto } from '../proto/index.js';
import { analyzeModel, createSession, instrumentGrams, loadModel, OrtTensor, runSession, type Tensor } from '../shared/onnx/index.js';
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
    // Each of P, G and C creates its onnxruntime session inside its timing (C builds its instrumented graph and
    // session in collectGramStatistics), so the three do alike; `setups` keeps the sessions' share of each.
    const setups = { plain: [] as number[], grams: [] as number[], collect: [] as number[] };
    const plainRun = async (): Promise<void> => {
      const begun = performance.now();
      const plain = await createSession(model, { intraOpThreads: context.threads });
      setups.plain.push(performance.now() - begun);
      // Tokenized here too, so both sides do the same work apart from the statistics.
      const fresh = examples.map((e) => tokenizer.encode(e.text, e.pair));
      for (const batch of lengthBatches(fresh, batchSize)) {
        await runSession(
          plain,
          buildFeeds(
            batch.map((i) => fresh[i]!),
            analysis.inputs,
            roles,
            tokenizer.padId,
          ),
          c.name,
        );
      }
      await plain.release();
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
      const begun = performance.now();
      const grams = await createSession(gramOnlyModel(dims), { intraOpThreads: context.threads });
      setups.grams.push(performance.now() - begun);
      for (const rowsInBatch of batchRows) {
        const feeds: Record<string, Tensor> = {};
        dims.forEach((d, k) => (feeds[`x${k}`] = new OrtTensor('float32', activations[k]!.subarray(0, rowsInBatch * d), [rowsInBatch, d])));
        await runSession(grams, feeds, 'grams alone', gramFetches);
      }
      await grams.release();
    };
    const plainTimes: number[] = [];
    const gramTimes: number[] = [];
    const collectTimes: number[] = [];
    await plainRun(); // warm-up
    await gramRun();
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
      await collectGramStatistics(model, analysis, tokenizer, examples, { batchSize, intraOpThreads: context.threads });
      collectTimes.push(performance.now() - t);
      // C's share of setup, measured apart (the same instrumentation and session collectGramStatistics makes).
      t = performance.now();
      const instrumented = instrumentGrams(model, analysis.gramGroups, analysis.rowRules, { includePadding: false, gramOutputsOnly: true });
      await (await createSession(instrumented.model, { intraOpThreads: context.threads })).release();
      setups.collect.push(performance.now() - t);
    }
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
      setupSeconds: { plain: median(setups.plain) / 1000, grams: median(setups.grams) / 1000, collect: median(setups.collect) / 1000 },
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
      [setups.plain, setups.grams, setups.collect].map((x) => (median(x) / 1000).toFixed(2)).join(' / '),
    ]);
  }
  context.print(
    `collect: statistics collection C vs plain inference P and the same Gram products alone G (standalone onnxruntime float32 Gemm graph, one XᵀX per tapped tensor, on the batches' activation shapes), batch ${batchSize}, ${context.threads} threads, length-bucketed batches (medians of 5 runs, 3 for BERT-base; P and C include tokenization, each of P, G, C its session's creation)\n` +
      table(
        ['model', 'examples', 'tokens', 'Grams', 'P s', 'G s', 'P+G s', 'C s', 'C/(P+G)', 'collect/plain', 'sessions P / G / C s'],
        rows,
      ) +
      '\ngoal: C/(P+G) <= 1.1 (collect/plain >= 0.8 cannot be met on CPU: the Grams cost as much arithmetic as the model); G is the full XᵀX product, C computes a Gram of order ≥ 256 as its upper block triangle (shared/onnx gramBands)',
  );
  await rm(scratch, { recursive: true, force: true });
}
