// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
// Hugging Face checkpoints out (issue #16). The expected key lists below are written from the transformers
// architectures' definitions (module attributes and their nn.Linear/LayerNorm/Embedding parameters), not from
// gramfuse's output; the fixture checkpoints of label-skew-v1 are the ground truth for values and layouts.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { checkpointMapping } from '../../cli/hf-export.js';
import { readHfCheckpoint, writeHfCheckpoint } from '../../shared/merge/index.js';
import { analyzeModel, loadModel, saveModel, structuralCheckpointNames } from '../../shared/onnx/index.js';
import { runCli } from '../helpers/cli.js';
import { ALL_MODELS, fixture, fixtureModel, TOKENIZER } from '../helpers/fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-hf-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

type Keys = Record<string, readonly number[]>;
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** BertForSequenceClassification (transformers BertEmbeddings, BertLayer ×L, BertPooler, classifier). */
function bertKeys(o: { hidden: number; ffn: number; layers: number; vocab: number; positions: number; labels: number }): Keys {
  const h = o.hidden;
  const keys: Keys = {
    'bert.embeddings.word_embeddings.weight': [o.vocab, h],
    'bert.embeddings.position_embeddings.weight': [o.positions, h],
    'bert.embeddings.token_type_embeddings.weight': [2, h],
    'bert.embeddings.LayerNorm.weight': [h],
    'bert.embeddings.LayerNorm.bias': [h],
    'bert.pooler.dense.weight': [h, h],
    'bert.pooler.dense.bias': [h],
    'classifier.weight': [o.labels, h],
    'classifier.bias': [o.labels],
  };
  for (const l of range(o.layers)) {
    const p = `bert.encoder.layer.${l}`;
    for (const m of ['attention.self.query', 'attention.self.key', 'attention.self.value', 'attention.output.dense'])
      Object.assign(keys, { [`${p}.${m}.weight`]: [h, h], [`${p}.${m}.bias`]: [h] });
    Object.assign(keys, {
      [`${p}.intermediate.dense.weight`]: [o.ffn, h],
      [`${p}.intermediate.dense.bias`]: [o.ffn],
      [`${p}.output.dense.weight`]: [h, o.ffn],
      [`${p}.output.dense.bias`]: [h],
    });
    for (const n of ['attention.output.LayerNorm', 'output.LayerNorm'])
      Object.assign(keys, { [`${p}.${n}.weight`]: [h], [`${p}.${n}.bias`]: [h] });
  }
  return keys;
}

/** GPT2ForSequenceClassification: Conv1D weights are stored [in, out]; `score` is an nn.Linear without bias. */
function gpt2Keys(h: number, layers: number, vocab: number, positions: number, labels: number): Keys {
  const keys: Keys = {
    'transformer.wte.weight': [vocab, h],
    'transformer.wpe.weight': [positions, h],
    'transformer.ln_f.weight': [h],
    'transformer.ln_f.bias': [h],
    'score.weight': [labels, h],
  };
  for (const l of range(layers)) {
    const p = `transformer.h.${l}`;
    Object.assign(keys, {
      [`${p}.ln_1.weight`]: [h],
      [`${p}.ln_1.bias`]: [h],
      [`${p}.attn.c_attn.weight`]: [h, 3 * h],
      [`${p}.attn.c_attn.bias`]: [3 * h],
      [`${p}.attn.c_proj.weight`]: [h, h],
      [`${p}.attn.c_proj.bias`]: [h],
      [`${p}.ln_2.weight`]: [h],
      [`${p}.ln_2.bias`]: [h],
      [`${p}.mlp.c_fc.weight`]: [h, 4 * h],
      [`${p}.mlp.c_fc.bias`]: [4 * h],
      [`${p}.mlp.c_proj.weight`]: [4 * h, h],
      [`${p}.mlp.c_proj.bias`]: [h],
    });
  }
  return keys;
}

/** The fixtures' T5 classifier: a T5EncoderModel as `encoder` (its embed_tokens tied to `shared`) and a `classifier` nn.Linear. */
function t5Keys(h: number, ffn: number, layers: number, vocab: number, buckets: number, heads: number, labels: number): Keys {
  const keys: Keys = {
    'encoder.shared.weight': [vocab, h],
    'encoder.encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight': [buckets, heads],
    'encoder.encoder.final_layer_norm.weight': [h],
    'classifier.weight': [labels, h],
    'classifier.bias': [labels],
  };
  for (const l of range(layers)) {
    const p = `encoder.encoder.block.${l}.layer`;
    for (const m of ['q', 'k', 'v', 'o']) keys[`${p}.0.SelfAttention.${m}.weight`] = [h, h];
    Object.assign(keys, {
      [`${p}.0.layer_norm.weight`]: [h],
      [`${p}.1.DenseReluDense.wi.weight`]: [ffn, h],
      [`${p}.1.DenseReluDense.wo.weight`]: [h, ffn],
      [`${p}.1.layer_norm.weight`]: [h],
    });
  }
  return keys;
}

/** LlamaForSequenceClassification / Qwen2ForSequenceClassification (Qwen2: q/k/v biases). */
function decoderKeys(o: { h: number; kv: number; ffn: number; layers: number; vocab: number; labels: number; qkvBias: boolean }): Keys {
  const keys: Keys = { 'model.embed_tokens.weight': [o.vocab, o.h], 'model.norm.weight': [o.h], 'score.weight': [o.labels, o.h] };
  for (const l of range(o.layers)) {
    const p = `model.layers.${l}`;
    Object.assign(keys, {
      [`${p}.self_attn.q_proj.weight`]: [o.h, o.h],
      [`${p}.self_attn.k_proj.weight`]: [o.kv, o.h],
      [`${p}.self_attn.v_proj.weight`]: [o.kv, o.h],
      [`${p}.self_attn.o_proj.weight`]: [o.h, o.h],
      [`${p}.mlp.gate_proj.weight`]: [o.ffn, o.h],
      [`${p}.mlp.up_proj.weight`]: [o.ffn, o.h],
      [`${p}.mlp.down_proj.weight`]: [o.h, o.ffn],
      [`${p}.input_layernorm.weight`]: [o.h],
      [`${p}.post_attention_layernorm.weight`]: [o.h],
    });
    if (o.qkvBias)
      Object.assign(keys, {
        [`${p}.self_attn.q_proj.bias`]: [o.h],
        [`${p}.self_attn.k_proj.bias`]: [o.kv],
        [`${p}.self_attn.v_proj.bias`]: [o.kv],
      });
  }
  return keys;
}

const BERT_MINI = bertKeys({ hidden: 128, ffn: 512, layers: 2, vocab: 8192, positions: 128, labels: 14 });
const EXPECTED: readonly { path: string; keys: Keys }[] = [
  ...ALL_MODELS.filter((m) => m.family === 'bert-classic' || m.family === 'bert-dynamo').map((m) => ({ path: m.path, keys: BERT_MINI })),
  ...['org0', 'org1'].map((org) => ({ path: fixtureModel('label-skew-v1', org), keys: BERT_MINI })),
  ...['gpt2-a', 'gpt2-b'].map((m) => ({ path: fixtureModel('tiny', m), keys: gpt2Keys(64, 2, 8192, 128, 14) })),
  ...['t5-a', 't5-b'].map((m) => ({ path: fixtureModel('tiny', m), keys: t5Keys(64, 256, 2, 8192, 32, 2, 14) })),
  ...['llama-a', 'llama-b'].map((m) => ({
    path: fixtureModel('tiny', m),
    keys: decoderKeys({ h: 64, kv: 32, ffn: 128, layers: 2, vocab: 8192, labels: 14, qkvBias: false }),
  })),
  ...['qwen2-a', 'qwen2-b'].map((m) => ({
    path: fixtureModel('tiny', m),
    keys: decoderKeys({ h: 64, kv: 32, ffn: 128, layers: 2, vocab: 8192, labels: 14, qkvBias: true }),
  })),
];

describe("names from the export's structure", () => {
  it.each(EXPECTED.map((e) => [e.path.split('/models/')[1]!, e] as const))(
    '%s: exactly the architecture’s keys, in its layout',
    async (_name, e) => {
      const model = await loadModel(e.path);
      const mapping = structuralCheckpointNames(model, await analyzeModel(model, { probe: false }));
      const got = Object.fromEntries(mapping.entries.map((x) => [x.name, x.shape]));
      expect(got).toEqual(e.keys);
    },
  );

  it('dynamo: the folded scalar constants are left out, not named', async () => {
    const model = await loadModel(fixtureModel('label-skew', 'org0', 'model.dynamo.onnx'));
    const mapping = structuralCheckpointNames(model, await analyzeModel(model, { probe: false }));
    expect(mapping.constants.length).toBeGreaterThan(0);
    expect(mapping.constants.every((c) => /^(val|clone)_\d+$/.test(c))).toBe(true);
  });

  it('a parameter the structure cannot name is CHECKPOINT_MISMATCH naming it (no partial checkpoint)', async () => {
    const model = await loadModel(fixtureModel('label-skew-v1', 'org0'));
    const tensor = model.proto.graph!.initializer.find((t) => t.name === 'm.bert.embeddings.LayerNorm.weight')!;
    const renamed = 'onnx::LayerNormalization_7';
    for (const node of model.proto.graph!.node) node.input = node.input.map((i) => (i === tensor.name ? renamed : i));
    tensor.name = renamed;
    const path = join(work, 'renamed.onnx');
    await saveModel(model, path);
    let caught: unknown;
    try {
      await checkpointMapping(path, undefined, path);
    } catch (error) {
      caught = error;
    }
    expect(caught).toMatchObject({ code: 'CHECKPOINT_MISMATCH', message: expect.stringContaining(renamed) });
  });
});

describe('names matched by value to a shipped checkpoint', () => {
  for (const org of ['org0', 'org1']) {
    it(`${org}: complete, and the same names the structure gives`, async () => {
      const path = fixtureModel('label-skew-v1', org);
      const byValue = await checkpointMapping(path, join(fixture('models', 'label-skew-v1', org)), path);
      const checkpoint = await readHfCheckpoint(fixture('models', 'label-skew-v1', org));
      expect(byValue.entries.map((e) => e.name).sort()).toEqual([...checkpoint.tensors.keys()].sort());
      const structural = await checkpointMapping(path, undefined, path);
      const names = (m: typeof byValue) => Object.fromEntries(m.entries.map((e) => [e.parameter, [e.name, e.transpose]]));
      expect(names(byValue)).toEqual(names(structural));
    });

    it(`${org}: export equals the checkpoint byte for byte in every tensor, with and without --hf-checkpoint`, async () => {
      const dir = fixture('models', 'label-skew-v1', org);
      const original = await readHfCheckpoint(dir);
      for (const withCheckpoint of [false, true]) {
        const out = join(work, `export-${org}-${withCheckpoint}`);
        const r = await runCli(['export', join(dir, 'model.onnx'), '--hf-out', out, ...(withCheckpoint ? ['--hf-checkpoint', dir] : [])]);
        expect(r.code, r.stderr).toBe(0);
        const exported = await readHfCheckpoint(out);
        expect([...exported.tensors.keys()].sort()).toEqual([...original.tensors.keys()].sort());
        for (const [name, t] of original.tensors) {
          const u = exported.tensors.get(name)!;
          expect(u.dtype, name).toBe(t.dtype);
          expect(Buffer.compare(readFileSync(u.file).subarray(u.begin, u.end), readFileSync(t.file).subarray(t.begin, t.end)), name).toBe(
            0,
          );
        }
        if (withCheckpoint) expect(readFileSync(join(out, 'config.json'), 'utf8')).toBe(readFileSync(join(dir, 'config.json'), 'utf8'));
      }
    });
  }

  it("another owner's checkpoint does not match: CHECKPOINT_MISMATCH, nothing written", async () => {
    const out = join(work, 'mismatch');
    const r = await runCli([
      'export',
      fixtureModel('label-skew-v1', 'org0'),
      '--hf-out',
      out,
      '--hf-checkpoint',
      fixture('models', 'label-skew-v1', 'org1'),
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/CHECKPOINT_MISMATCH/);
    expect(() => readFileSync(join(out, 'model.safetensors'))).toThrow();
  });
});

describe('merge --hf-out', () => {
  it('has the input checkpoint’s keys, shapes and dtypes, and every tensor is the merged ONNX parameter (transposed where the layout says)', async () => {
    mkdirSync(join(work, 'merged'));
    const out = join(work, 'merged', 'merged.onnx');
    const hfOut = join(work, 'merged-hf');
    const data = (org: string) => fixture('scenarios', 'label-skew', `${org}.jsonl`);
    const r = await runCli([
      'merge',
      ...['org0', 'org1'].flatMap((org) => ['--model', fixtureModel('label-skew-v1', org), '--data', data(org)]),
      '--tokenizer',
      TOKENIZER,
      '--max-examples',
      '64',
      '--out',
      out,
      '--hf-out',
      hfOut,
      '--hf-checkpoint',
      fixture('models', 'label-skew-v1', 'org0'),
    ]);
    expect(r.code, r.stderr).toBe(0);
    const input = await readHfCheckpoint(fixture('models', 'label-skew-v1', 'org0'));
    const output = await readHfCheckpoint(hfOut);
    const describe = (c: typeof input) => Object.fromEntries([...c.tensors].map(([n, t]) => [n, `${t.dtype}[${t.shape.join(',')}]`]));
    expect(describe(output)).toEqual(describe(input));
    // Independently of the mapping: each output tensor equals one merged parameter's bytes, as stored or transposed.
    const merged = await loadModel(out);
    const params = merged.proto.graph!.initializer.filter((t) => t.dataType === 1);
    const used = new Set<string>();
    for (const [name, t] of output.tensors) {
      const bytes = new Float32Array(new Uint8Array(readFileSync(t.file).subarray(t.begin, t.end)).buffer);
      const match = params.find((p) => {
        if (used.has(p.name!)) return false;
        const v = new Float32Array(new Uint8Array(p.rawData!).buffer);
        if (v.length !== bytes.length) return false;
        if (v.every((x, i) => x === bytes[i])) return true;
        if (p.dims.length !== 2) return false;
        const [rows, cols] = [Number(p.dims[0]), Number(p.dims[1])];
        return t.shape[0] === cols && v.every((x, i) => x === bytes[(i % cols) * rows + Math.floor(i / cols)]);
      });
      expect(match, name).toBeDefined();
      used.add(match!.name!);
    }
    expect(readFileSync(join(hfOut, 'tokenizer.json'), 'utf8')).toBe(readFileSync(TOKENIZER, 'utf8'));
    const card = readFileSync(join(hfOut, 'README.md'), 'utf8');
    expect(card).toMatch(/regmean/);
    expect(card).toMatch(/\| org0 \| 64 \|/);
  });

  it('past the shard size: shards and model.safetensors.index.json, read back to the same tensors', async () => {
    const path = fixtureModel('label-skew-v1', 'org0');
    const mapping = await checkpointMapping(path, undefined, path);
    const out = join(work, 'sharded');
    const { files } = await writeHfCheckpoint(out, await loadModel(path), mapping, { shardBytes: 2_000_000 });
    expect(files).toContain('model.safetensors.index.json');
    expect(files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length).toBeGreaterThan(1);
    const index = JSON.parse(readFileSync(join(out, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    const single = await readHfCheckpoint(fixture('models', 'label-skew-v1', 'org0'));
    expect(Object.keys(index.weight_map).sort()).toEqual([...single.tensors.keys()].sort());
    const sharded = await readHfCheckpoint(out);
    for (const [name, t] of single.tensors) {
      const u = sharded.tensors.get(name)!;
      expect(Buffer.compare(readFileSync(u.file).subarray(u.begin, u.end), readFileSync(t.file).subarray(t.begin, t.end)), name).toBe(0);
    }
  });

  it('refuses a --hf-out directory that is not empty before merging anything', async () => {
    const hfOut = join(work, 'full');
    rmSync(hfOut, { recursive: true, force: true });
    mkdirSync(hfOut);
    writeFileSync(join(hfOut, 'keep.txt'), 'mine');
    const out = join(work, 'never', 'merged.onnx');
    const r = await runCli([
      'merge',
      '--model',
      fixtureModel('label-skew-v1', 'org0'),
      '--method',
      'average',
      '--model',
      fixtureModel('label-skew-v1', 'org1'),
      '--out',
      out,
      '--hf-out',
      hfOut,
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/INVALID_ARGUMENT.*not empty/);
    expect(readFileSync(join(hfOut, 'keep.txt'), 'utf8')).toBe('mine');
  });
});

describe('inspect --json', () => {
  it('gives each parameter its checkpoint name', async () => {
    const r = await runCli(['inspect', fixtureModel('tiny', 'llama-a'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { checkpoint: { parameters: { name: string; checkpointName: string; transposed: boolean }[] } };
    expect(report.checkpoint.parameters).toContainEqual(
      expect.objectContaining({ checkpointName: 'model.layers.0.self_attn.q_proj.weight', transposed: true }),
    );
    expect(report.checkpoint.parameters).toContainEqual({
      name: 'm.model.norm.weight',
      checkpointName: 'model.norm.weight',
      transposed: false,
      shape: [64],
    });
  });
});
