// Causal-LM evaluation (`gramfuse eval` on a model with [batch, sequence, vocab] logits): perplexity and next-token
// accuracy over every position whose successor is a real token. The model here is a bigram LM written in ONNX —
// logits[t] = E[ids[t]]·W —, so the expected figures are computed in float64 from E and W directly.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { graphBuilder } from '../../../bench/graph-builder.js';
import { loadTokenizer, runEvaluation } from '../../../agent/index.js';
import { GraphProto, ModelProto, NodeProto, ValueInfoProto } from '../../../proto/index.js';
import { analyzeModel, loadModel, saveModel } from '../../../shared/onnx/index.js';
import { EXAMPLE_TOKENIZER } from '../../helpers/examples.js';
import { initializerValues } from '../../helpers/regmean-reference.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-lm-eval-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const VOCAB = 8192; // the example tokenizer's
const HIDDEN = 4;

async function bigramModel(path: string, dtype: 'float32' | 'float16'): Promise<void> {
  const b = graphBuilder(7, dtype);
  const embedding = b.floats('embed.weight', [VOCAB, HIDDEN], 'random', 2);
  const logits = b.op('MatMul', [b.op('Gather', [embedding, 'input_ids']), b.floats('lm_head.weight', [HIDDEN, VOCAB], 'random', 2)]);
  const input = (name: string) =>
    ValueInfoProto.fromPartial({
      name,
      type: { tensorType: { elemType: 7, shape: { dim: [{ dimParam: 'batch' }, { dimParam: 'sequence' }] } } },
    });
  b.node.push(NodeProto.fromPartial({ opType: 'Identity', name: 'logits', input: [logits], output: ['logits'] }));
  const graph = GraphProto.fromPartial({
    name: 'bigram',
    node: b.node,
    initializer: b.initializer,
    input: [input('input_ids'), input('attention_mask')],
    output: [
      ValueInfoProto.fromPartial({
        name: 'logits',
        type: {
          tensorType: {
            elemType: b.floatType,
            shape: { dim: [{ dimParam: 'batch' }, { dimParam: 'sequence' }, { dimValue: BigInt(VOCAB) }] },
          },
        },
      }),
    ],
  });
  const proto = ModelProto.fromPartial({ irVersion: 8n, opsetImport: [{ domain: '', version: 17n }], graph });
  await saveModel({ proto, baseDir: undefined, source: 'bigram' }, path);
}

const texts = ['apt package manager for debian', 'a library', 'python bindings for the gnome desktop toolkit and more', 'x'];

describe.each(['float32', 'float16'] as const)('perplexity of a %s causal LM', (dtype) => {
  it('is exp(mean NLL) over next-token positions, padding excluded; token accuracy counts argmax hits', async () => {
    const path = join(work, `bigram-${dtype}.onnx`);
    await bigramModel(path, dtype);
    const model = await loadModel(path);
    expect((await analyzeModel(model, { probe: false })).task).toMatchObject({ kind: 'causal-lm', vocab: VOCAB });
    const data = join(work, 'texts.jsonl');
    writeFileSync(data, texts.map((text) => JSON.stringify({ text })).join('\n'));
    const result = await runEvaluation({ models: [path], data, tokenizer: EXAMPLE_TOKENIZER, batchSize: 3, maxLength: 16 });

    // The independent figure: float64 logits E[a]·W for every consecutive pair (a, b) of each text's own tokens.
    const e = initializerValues(model, 'embed.weight');
    const w = initializerValues(model, 'lm_head.weight');
    const tokenizer = await loadTokenizer(EXAMPLE_TOKENIZER, { maxLength: 16 });
    let nll = 0;
    let tokens = 0;
    let correct = 0;
    for (const text of texts) {
      const ids = tokenizer.encode(text).ids;
      for (let t = 0; t + 1 < ids.length; t++) {
        const logits = Float64Array.from({ length: VOCAB }, (_, v) => {
          let sum = 0;
          for (let h = 0; h < HIDDEN; h++) sum += e[ids[t]! * HIDDEN + h]! * w[h * VOCAB + v]!;
          return sum;
        });
        const max = Math.max(...logits);
        const lse = max + Math.log(logits.reduce((s, x) => s + Math.exp(x - max), 0));
        nll += lse - logits[ids[t + 1]!]!;
        if (logits.indexOf(max) === ids[t + 1]) correct++;
        tokens++;
      }
    }
    expect(result).toMatchObject({ task: 'causal-lm', examples: texts.length, tokens });
    if (!('task' in result)) throw new Error('not evaluated as a causal LM');
    // Tolerance: onnxruntime's logits are float32 (float16: one step ≈ 1e-3 relative of logits up to ≈ 16 in size).
    const tolerance = dtype === 'float32' ? 1e-5 : 2e-2;
    expect(Math.abs(result.meanNll - nll / tokens)).toBeLessThanOrEqual(tolerance);
    expect(Math.abs(Math.log(result.perplexity) - nll / tokens)).toBeLessThanOrEqual(tolerance);
    if (dtype === 'float32') expect(result.tokenAccuracy).toBeCloseTo(correct / tokens, 10);
    else expect(Math.abs(result.tokenAccuracy - correct / tokens)).toBeLessThanOrEqual(2 / tokens);
  });
});
