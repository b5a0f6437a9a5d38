// bench/collect: tokens/s of statistics collection (instrumented graph + float64 accumulation) against
// plain inference of the same model on the same batches, threads and data, measured in the same run.
import { resolve } from 'node:path';

import { buildFeeds, collectExamples, collectGramStatistics, inputRoles, lengthBatches, loadTokenizer } from '../agent/index.js';
import { analyzeModel, createSession, loadModel, runSession } from '../shared/onnx/index.js';
import { type BenchContext, median, table } from './harness.js';

const fixtures = resolve(import.meta.dirname, '../../shared/fixtures');

export async function benchCollect(context: BenchContext): Promise<void> {
  const cases = [
    {
      name: 'label-skew/org0',
      model: `${fixtures}/models/label-skew/org0/model.onnx`,
      data: `${fixtures}/scenarios/label-skew/org0.jsonl`,
    },
    { name: 'languages/de', model: `${fixtures}/models/languages/de/model.onnx`, data: `${fixtures}/scenarios/languages/de.jsonl` },
  ];
  const tokenizer = await loadTokenizer(`${fixtures}/tokenizer/tokenizer.json`, { maxLength: 128 });
  const batchSize = 32;
  const rows: (string | number)[][] = [];
  for (const c of cases) {
    const model = await loadModel(c.model);
    const analysis = await analyzeModel(model);
    const examples = await collectExamples(c.data, context.quick ? { maxExamples: 400 } : {});
    const encoded = examples.map((e) => tokenizer.encode(e.text, e.pair));
    const tokens = encoded.reduce((s, e) => s + e.ids.length, 0);
    const roles = inputRoles(analysis.inputs);
    const plain = await createSession(model, { intraOpThreads: context.threads });
    const plainRun = async (): Promise<void> => {
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
    };
    const plainTimes: number[] = [];
    const collectTimes: number[] = [];
    await plainRun(); // warm-up
    for (let run = 0; run < (context.quick ? 2 : 3); run++) {
      let t = performance.now();
      await plainRun();
      plainTimes.push(performance.now() - t);
      t = performance.now();
      await collectGramStatistics(model, analysis, tokenizer, examples, { batchSize, intraOpThreads: context.threads });
      collectTimes.push(performance.now() - t);
    }
    await plain.release();
    const baselineTokensPerSecond = tokens / (median(plainTimes) / 1000);
    const tokensPerSecond = tokens / (median(collectTimes) / 1000);
    context.emit({
      bench: 'collect',
      model: c.name,
      examples: examples.length,
      tokens,
      batchSize,
      threads: context.threads,
      tokensPerSecond,
      baselineTokensPerSecond,
      ratio: tokensPerSecond / baselineTokensPerSecond,
    });
    rows.push([
      c.name,
      examples.length,
      tokens,
      baselineTokensPerSecond.toFixed(0),
      tokensPerSecond.toFixed(0),
      (tokensPerSecond / baselineTokensPerSecond).toFixed(2),
    ]);
  }
  context.print(
    `collect: statistics collection vs plain inference, batch ${batchSize}, ${context.threads} threads, length-bucketed batches (medians; both include tokenization)\n` +
      table(['model', 'examples', 'tokens', 'plain tokens/s', 'collect tokens/s', 'collect/plain'], rows) +
      '\ngoal: collect/plain >= 0.8',
  );
}
