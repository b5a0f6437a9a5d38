// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
// Hugging Face directories in (issue 39): the tiny Llama and Qwen2 sequence classifiers built from config.json +
// model.safetensors give the logits of the transformers-made ONNX exports of the same weights, on real tokenized text
// in padded batches; the built graph keeps its float32 weights in the safetensors file (no copy) and the analysis
// finds the same linear layers and Gram groups as in the export.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { loadTokenizer, predictLogits } from '../../agent/index.js';
import { buildHfModel } from '../../shared/hf/index.js';
import { analyzeModel, createSession, isExternal, loadModel, type OnnxModel, OrtTensor, runSession } from '../../shared/onnx/index.js';
import { runCli } from '../helpers/cli.js';
import { fixture, jsonlRows } from '../helpers/fixtures.js';

const TOKENIZER = fixture('hf', 'tiny', 'llama-a', 'tokenizer.json');
const TEXTS = jsonlRows(fixture('scenarios', 'label-skew', 'org0.jsonl'), 12).map((r) => r.text);

/** Right-padded batches of real text (lengths differ, so every batch but a one-example one has padding). */
async function batches(
  maxLength: number,
  size: number,
  tokenizerPath = TOKENIZER,
): Promise<{ ids: BigInt64Array; mask: BigInt64Array; batch: number; seq: number }[]> {
  const tokenizer = await loadTokenizer(tokenizerPath, { maxLength });
  const encoded = TEXTS.map((t, i) => tokenizer.encode(t.slice(0, 40 + 37 * i)).ids);
  const out = [];
  for (let start = 0; start < encoded.length; start += size) {
    const group = encoded.slice(start, start + size);
    const seq = Math.max(...group.map((e) => e.length));
    const ids = new BigInt64Array(group.length * seq).fill(BigInt(tokenizer.padId));
    const mask = new BigInt64Array(group.length * seq);
    group.forEach((e, b) =>
      e.forEach((id, t) => {
        ids[b * seq + t] = BigInt(id);
        mask[b * seq + t] = 1n;
      }),
    );
    out.push({ ids, mask, batch: group.length, seq });
  }
  return out;
}

async function logitsOf(model: OnnxModel, feeds: Awaited<ReturnType<typeof batches>>): Promise<Float32Array[]> {
  const session = await createSession(model);
  try {
    const out: Float32Array[] = [];
    for (const f of feeds) {
      const result = await runSession(
        session,
        {
          input_ids: new OrtTensor('int64', f.ids, [f.batch, f.seq]),
          attention_mask: new OrtTensor('int64', f.mask, [f.batch, f.seq]),
          // BERT's segment ids: all zero for single texts (what the agent feeds too).
          ...(model.proto.graph!.input.some((i) => i.name === 'token_type_ids')
            ? { token_type_ids: new OrtTensor('int64', new BigInt64Array(f.ids.length), [f.batch, f.seq]) }
            : {}),
        },
        model.source,
      );
      out.push(result.logits!.data as Float32Array);
    }
    return out;
  } finally {
    await session.release();
  }
}

function expectClose(built: Float32Array[], reference: Float32Array[]): number {
  let largest = 0;
  let worst = 0;
  for (let i = 0; i < reference.length; i++) {
    expect(built[i]!.length).toBe(reference[i]!.length);
    for (let j = 0; j < reference[i]!.length; j++) {
      largest = Math.max(largest, Math.abs(reference[i]![j]!));
      worst = Math.max(worst, Math.abs(built[i]![j]! - reference[i]![j]!));
    }
  }
  expect(largest).toBeGreaterThan(0.01);
  expect(worst).toBeLessThanOrEqual(1e-4 * largest);
  return worst / largest;
}

describe('HF directory → ONNX (decoder sequence classifiers)', () => {
  for (const name of ['llama-a', 'llama-b', 'qwen2-a', 'qwen2-b']) {
    it(`${name}: the built model's logits equal the transformers export's within 1e-4 of the largest, with padding`, async () => {
      const dir = fixture('hf', 'tiny', name);
      const built = await buildHfModel(dir);
      // Float32 weights stay in model.safetensors: every initializer is external, at the file's own byte ranges.
      expect(built.convertedBytes).toBe(0);
      expect(built.model.proto.graph!.initializer.every(isExternal)).toBe(true);
      const export_ = await loadModel(fixture('models', 'tiny', name, 'model.onnx'));
      const feeds = await batches(48, 5);
      expect(feeds.some((f) => f.batch > 1 && f.mask.some((m) => m === 0n))).toBe(true);
      expectClose(await logitsOf(built.model, feeds), await logitsOf(export_, feeds));
    });
  }

  it('without a pad_token_id the classifier reads the last attended token: same logits on right-padded batches', async () => {
    const work = mkdtempSync(join(tmpdir(), 'gramfuse-hf-nopad-'));
    try {
      const source = fixture('hf', 'tiny', 'qwen2-b');
      const config = JSON.parse(readFileSync(join(source, 'config.json'), 'utf8')) as Record<string, unknown>;
      writeFileSync(join(work, 'config.json'), JSON.stringify({ ...config, pad_token_id: null }));
      copyFileSync(join(source, 'model.safetensors'), join(work, 'model.safetensors'));
      const feeds = await batches(48, 6);
      const exported = await loadModel(fixture('models', 'tiny', 'qwen2-b', 'model.onnx'));
      expectClose(await logitsOf((await buildHfModel(work)).model, feeds), await logitsOf(exported, feeds));
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  const encoders = [
    { name: 'roberta-a', dir: fixture('hf', 'tiny', 'roberta-a'), onnx: fixture('models', 'tiny', 'roberta-a', 'model.onnx') },
    {
      name: 'label-skew-v1/org0 (BERT)',
      dir: fixture('models', 'label-skew-v1', 'org0'),
      onnx: fixture('models', 'label-skew-v1', 'org0', 'model.onnx'),
      tokenizer: fixture('tokenizer', 'tokenizer.json'),
    },
  ];
  for (const e of encoders) {
    it(`${e.name}: the encoder built from config.json + model.safetensors gives the export's logits`, async () => {
      const built = await buildHfModel(e.dir);
      expect(built.model.proto.graph!.initializer.every(isExternal)).toBe(true);
      const exported = await loadModel(e.onnx);
      expect(built.model.proto.graph!.input.map((i) => i.name)).toEqual(exported.proto.graph!.input.map((i) => i.name));
      const feeds = await batches(64, 5, e.tokenizer ?? join(e.dir, 'tokenizer.json'));
      expectClose(await logitsOf(built.model, feeds), await logitsOf(exported, feeds));
      const [a, x] = [await analyzeModel(built.model), await analyzeModel(exported)];
      expect(a.linearLayers.length).toBe(x.linearLayers.length);
      expect(a.gramGroups.length).toBe(x.gramGroups.length);
      // The head reads the first token only: its Gram rows are kept whole, as in the export.
      const rules = (m: typeof a) => m.gramGroups.map((g) => g.inputs.map((i) => m.rowRules.get(i)?.rows ?? 'none').join());
      expect(rules(a)).toEqual(rules(x));
    });
  }

  it("through the agent's own inference path (predictLogits: its batching, padding and session), every fixture directory gives its export's logits", async () => {
    const cases = [
      ...['llama-a', 'llama-b', 'qwen2-a', 'qwen2-b', 'roberta-a'].map((n) => ({
        dir: fixture('hf', 'tiny', n),
        onnx: fixture('models', 'tiny', n, 'model.onnx'),
        tokenizer: join(fixture('hf', 'tiny', n), 'tokenizer.json'),
      })),
      {
        dir: fixture('models', 'label-skew-v1', 'org1'),
        onnx: fixture('models', 'label-skew-v1', 'org1', 'model.onnx'),
        tokenizer: fixture('tokenizer', 'tokenizer.json'),
      },
    ];
    const examples = TEXTS.map((text, line) => ({ text, line }));
    for (const c of cases) {
      const tokenizer = await loadTokenizer(c.tokenizer, { maxLength: 64 });
      const run = async (model: OnnxModel) =>
        (await predictLogits([{ model, analysis: await analyzeModel(model, { probe: false }) }], tokenizer, examples, { batchSize: 5 }))
          .logits;
      const built = await run(await loadModel(c.dir)); // loadModel: the one place a path (or directory) is opened
      const reference = await run(await loadModel(c.onnx));
      expectClose([Float32Array.from(built)], [Float32Array.from(reference)]);
    }
  });

  it("`gramfuse export DIR --onnx-out` writes that model: its logits equal the export's too", async () => {
    const work = mkdtempSync(join(tmpdir(), 'gramfuse-hf-export-'));
    try {
      const out = join(work, 'llama-b.onnx');
      const r = await runCli(['export', fixture('hf', 'tiny', 'llama-b'), '--onnx-out', out]);
      expect(r.code, r.stderr).toBe(0);
      const written = await loadModel(out);
      expect(written.proto.graph!.initializer.some(isExternal)).toBe(false); // one self-contained file
      const feeds = await batches(64, 4);
      expectClose(
        await logitsOf(written, feeds),
        await logitsOf(await loadModel(fixture('models', 'tiny', 'llama-b', 'model.onnx')), feeds),
      );
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  it("the analysis finds the export's linear layers and Gram groups in the built graph (7 layers and 4 groups per block + the head)", async () => {
    const built = await analyzeModel((await buildHfModel(fixture('hf', 'tiny', 'qwen2-a'))).model);
    const exported = await analyzeModel(await loadModel(fixture('models', 'tiny', 'qwen2-a', 'model.onnx')));
    expect(built.linearLayers.length).toBe(exported.linearLayers.length);
    expect(built.gramGroups.length).toBe(exported.gramGroups.length);
    expect(built.linearLayers.length).toBe(2 * 7 + 1);
    expect(built.gramGroups.length).toBe(2 * 4 + 1);
    expect(built.linearLayers.every((l) => l.orientation === 'out_in')).toBe(true);
    const q = built.linearLayers.find((l) => l.weight === 'model.layers.0.self_attn.q_proj.weight')!;
    expect(q.bias).toBe('model.layers.0.self_attn.q_proj.bias');
    // Token rows of every group are masked by attention_mask (the head reads every position, as in the export).
    const rules = (a: typeof built) => a.gramGroups.map((g) => g.inputs.map((i) => a.rowRules.get(i)?.rows ?? 'none').join());
    expect(rules(built)).toEqual(rules(exported));
    expect(rules(built).every((r) => r === 'tokens')).toBe(true);
  });
});
