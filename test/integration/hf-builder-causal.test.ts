// Hugging Face directories in (issue 39): causal LMs (Llama, Mistral, Qwen2), made here with random weights and
// written as safetensors (F32, BF16, F16, sharded), built by shared/hf and run by onnxruntime, against an INDEPENDENT
// float64 forward written below from transformers' formulas (modeling_llama.py / modeling_qwen2.py / modeling_mistral.py
// and modeling_rope_utils.py): RMSNorm, rotary embedding at positions 0..seq−1 with default or llama3 inverse
// frequencies, grouped-query attention under the causal (+ sliding window) and padding masks, SwiGLU, tied or untied
// lm_head, head_dim ≠ hidden / heads. Batches carry right and left padding; only non-pad positions are compared (a pad
// position's logits are not defined by the model).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { buildHfModel } from '../../shared/hf/index.js';
import { analyzeModel, createSession, isExternal, OrtTensor, runSession } from '../../shared/onnx/index.js';
import { roundTo, type StoredDtype, type TestTensor, writeHfDirectory } from '../helpers/hf-directory.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-hf-causal-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface Case {
  readonly name: string;
  readonly architecture: string;
  readonly dtype: StoredDtype;
  readonly shards: number;
  readonly tied: boolean;
  readonly headDim: number | undefined;
  readonly llama3: boolean;
  readonly slidingWindow?: number;
  readonly qkvBias: boolean;
}

const HIDDEN = 48;
const HEADS = 4;
const KV_HEADS = 2;
const FFN = 40;
const VOCAB = 61;
const LAYERS = 2;
const EPS = 1e-5;
const THETA = 10000;
const LLAMA3 = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 };

const CASES: readonly Case[] = [
  {
    name: 'llama-f32-llama3-headdim',
    architecture: 'LlamaForCausalLM',
    dtype: 'F32',
    shards: 1,
    tied: false,
    headDim: 16,
    llama3: true,
    qkvBias: false,
  },
  {
    name: 'qwen2-bf16-tied',
    architecture: 'Qwen2ForCausalLM',
    dtype: 'BF16',
    shards: 1,
    tied: true,
    headDim: undefined,
    llama3: false,
    qkvBias: true,
  },
  {
    name: 'mistral-f16-sharded-window',
    architecture: 'MistralForCausalLM',
    dtype: 'F16',
    shards: 3,
    tied: false,
    headDim: 16,
    llama3: false,
    slidingWindow: 3,
    qkvBias: false,
  },
  {
    name: 'llama-f32-sharded-tied',
    architecture: 'LlamaForCausalLM',
    dtype: 'F32',
    shards: 2,
    tied: true,
    headDim: undefined,
    llama3: true,
    qkvBias: false,
  },
];

/** mulberry32: reproducible weights. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function makeCheckpoint(c: Case, seed: number): { config: Record<string, unknown>; tensors: TestTensor[] } {
  const next = random(seed);
  const hd = c.headDim ?? HIDDEN / HEADS;
  const tensors: TestTensor[] = [];
  const add = (name: string, shape: number[], scale: number, around = 0): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    tensors.push({ name, shape, values: Float64Array.from({ length: n }, () => around + (next() - 0.5) * 2 * scale) });
  };
  add('model.embed_tokens.weight', [VOCAB, HIDDEN], 0.5);
  for (let l = 0; l < LAYERS; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [HIDDEN], 0.2, 1);
    add(`${p}.self_attn.q_proj.weight`, [HEADS * hd, HIDDEN], 0.25);
    add(`${p}.self_attn.k_proj.weight`, [KV_HEADS * hd, HIDDEN], 0.25);
    add(`${p}.self_attn.v_proj.weight`, [KV_HEADS * hd, HIDDEN], 0.25);
    if (c.qkvBias) {
      add(`${p}.self_attn.q_proj.bias`, [HEADS * hd], 0.2);
      add(`${p}.self_attn.k_proj.bias`, [KV_HEADS * hd], 0.2);
      add(`${p}.self_attn.v_proj.bias`, [KV_HEADS * hd], 0.2);
    }
    add(`${p}.self_attn.o_proj.weight`, [HIDDEN, HEADS * hd], 0.2);
    add(`${p}.post_attention_layernorm.weight`, [HIDDEN], 0.2, 1);
    add(`${p}.mlp.gate_proj.weight`, [FFN, HIDDEN], 0.25);
    add(`${p}.mlp.up_proj.weight`, [FFN, HIDDEN], 0.25);
    add(`${p}.mlp.down_proj.weight`, [HIDDEN, FFN], 0.25);
  }
  add('model.norm.weight', [HIDDEN], 0.2, 1);
  if (!c.tied) add('lm_head.weight', [VOCAB, HIDDEN], 0.3);
  const model_type = c.architecture.startsWith('Qwen2') ? 'qwen2' : c.architecture.startsWith('Mistral') ? 'mistral' : 'llama';
  const config: Record<string, unknown> = {
    architectures: [c.architecture],
    model_type,
    vocab_size: VOCAB,
    hidden_size: HIDDEN,
    intermediate_size: FFN,
    num_hidden_layers: LAYERS,
    num_attention_heads: HEADS,
    num_key_value_heads: KV_HEADS,
    hidden_act: 'silu',
    max_position_embeddings: 128,
    rms_norm_eps: EPS,
    rope_theta: THETA,
    rope_scaling: c.llama3 ? LLAMA3 : null,
    tie_word_embeddings: c.tied,
    torch_dtype: c.dtype === 'F32' ? 'float32' : c.dtype === 'F16' ? 'float16' : 'bfloat16',
    sliding_window: c.slidingWindow ?? null,
  };
  if (c.headDim !== undefined) config.head_dim = c.headDim;
  return { config, tensors };
}

// ---- The independent float64 forward (transformers' formulas, written out). ----

/** modeling_rope_utils: default θ^(−2i/d), or `_compute_llama3_parameters`. */
function inverseFrequencies(hd: number, llama3: boolean): number[] {
  const inv = Array.from({ length: hd / 2 }, (_, i) => 1 / THETA ** ((2 * i) / hd));
  if (!llama3) return inv;
  const { factor, low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: old } = LLAMA3;
  const lowWavelen = old / low;
  const highWavelen = old / high;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    const scaled = wavelen > lowWavelen ? f / factor : f;
    const smooth = (old / wavelen - low) / (high - low);
    const smoothed = ((1 - smooth) * scaled) / factor + smooth * scaled;
    const medium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
    return medium ? smoothed : scaled;
  });
}

function referenceLogits(c: Case, weights: ReadonlyMap<string, Float64Array>, ids: number[], mask: number[]): (Float64Array | undefined)[] {
  const W = (name: string): Float64Array => weights.get(name)!;
  const hd = c.headDim ?? HIDDEN / HEADS;
  const group = HEADS / KV_HEADS;
  // y = x Wᵀ (+ b) with W [out, in]
  const linear = (x: Float64Array, name: string, out: number, bias?: string): Float64Array => {
    const w = W(name);
    const inDim = x.length;
    const y = new Float64Array(out);
    for (let o = 0; o < out; o++) {
      let s = bias === undefined ? 0 : W(bias)[o]!;
      for (let i = 0; i < inDim; i++) s += x[i]! * w[o * inDim + i]!;
      y[o] = s;
    }
    return y;
  };
  const rmsNorm = (x: Float64Array, name: string): Float64Array => {
    let ms = 0;
    for (const v of x) ms += v * v;
    const r = 1 / Math.sqrt(ms / x.length + EPS);
    const w = W(name);
    return x.map((v, i) => w[i]! * v * r);
  };
  const inv = inverseFrequencies(hd, c.llama3);
  const rope = (v: Float64Array, heads: number, pos: number): Float64Array => {
    const out = new Float64Array(v.length);
    for (let h = 0; h < heads; h++)
      for (let i = 0; i < hd; i++) {
        const angle = pos * inv[i % (hd / 2)]!;
        const rotated = i < hd / 2 ? -v[h * hd + i + hd / 2]! : v[h * hd + i - hd / 2]!;
        out[h * hd + i] = v[h * hd + i]! * Math.cos(angle) + rotated * Math.sin(angle);
      }
    return out;
  };
  let x = ids.map((id) => W('model.embed_tokens.weight').slice(id * HIDDEN, (id + 1) * HIDDEN));
  for (let l = 0; l < LAYERS; l++) {
    const p = `model.layers.${l}`;
    const b = (n: string): string | undefined => (c.qkvBias ? `${p}.self_attn.${n}.bias` : undefined);
    const h = x.map((t) => rmsNorm(t, `${p}.input_layernorm.weight`));
    const q = h.map((t, pos) => rope(linear(t, `${p}.self_attn.q_proj.weight`, HEADS * hd, b('q_proj')), HEADS, pos));
    const k = h.map((t, pos) => rope(linear(t, `${p}.self_attn.k_proj.weight`, KV_HEADS * hd, b('k_proj')), KV_HEADS, pos));
    const v = h.map((t) => linear(t, `${p}.self_attn.v_proj.weight`, KV_HEADS * hd, b('v_proj')));
    const attended = x.map((_, t) => {
      const context = new Float64Array(HEADS * hd);
      for (let head = 0; head < HEADS; head++) {
        const kv = Math.floor(head / group);
        const allowed: number[] = [];
        for (let s = 0; s <= t; s++) if (mask[s] === 1 && (c.slidingWindow === undefined || t - s < c.slidingWindow)) allowed.push(s);
        const scores = allowed.map((s) => {
          let dot = 0;
          for (let i = 0; i < hd; i++) dot += q[t]![head * hd + i]! * k[s]![kv * hd + i]!;
          return dot / Math.sqrt(hd);
        });
        const top = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - top));
        const total = e.reduce((a, b2) => a + b2, 0);
        allowed.forEach((s, j) => {
          for (let i = 0; i < hd; i++) context[head * hd + i]! += (e[j]! / total) * v[s]![kv * hd + i]!;
        });
      }
      return linear(context, `${p}.self_attn.o_proj.weight`, HIDDEN);
    });
    x = x.map((t, i) => t.map((value, j) => value + attended[i]![j]!));
    const m = x.map((t) => rmsNorm(t, `${p}.post_attention_layernorm.weight`));
    const mlp = m.map((t) => {
      const gate = linear(t, `${p}.mlp.gate_proj.weight`, FFN);
      const up = linear(t, `${p}.mlp.up_proj.weight`, FFN);
      const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]!);
      return linear(act, `${p}.mlp.down_proj.weight`, HIDDEN);
    });
    x = x.map((t, i) => t.map((value, j) => value + mlp[i]![j]!));
  }
  const head = c.tied ? 'model.embed_tokens.weight' : 'lm_head.weight';
  return x.map((t, pos) => (mask[pos] === 1 ? linear(rmsNorm(t, 'model.norm.weight'), head, VOCAB) : undefined));
}

describe('HF causal LMs → ONNX, against an independent float64 forward', () => {
  // Batch of 3, sequence 7: right padding, none, left padding (positions stay 0..6, as transformers' default).
  const ids = [
    [5, 17, 33, 2, 60, 0, 0],
    [9, 8, 7, 6, 5, 4, 3],
    [0, 0, 41, 12, 3, 30, 22],
  ];
  const masks = ids.map((row, b) => row.map((_, t) => (b === 0 ? (t < 5 ? 1 : 0) : b === 2 ? (t >= 2 ? 1 : 0) : 1)));

  CASES.forEach((c, index) => {
    it(`${c.name}: logits [batch, seq, vocab] equal the float64 forward within 1e-4 of the largest`, async () => {
      const dir = join(work, c.name);
      const { config, tensors } = makeCheckpoint(c, 100 + index);
      writeHfDirectory(dir, config, tensors, { dtype: c.dtype, shards: c.shards });
      const built = await buildHfModel(dir);
      const initializers = built.model.proto.graph!.initializer;
      if (c.dtype === 'F32') {
        expect(built.convertedBytes).toBe(0);
        expect(initializers.every(isExternal)).toBe(true);
      } else {
        // Half precision is converted to float32 once: 4 bytes per stored value.
        expect(built.convertedBytes).toBe(tensors.reduce((s, t) => s + t.values.length * 4, 0));
        expect(initializers.some(isExternal)).toBe(false);
      }
      const session = await createSession(built.model);
      const batch = ids.length;
      const seq = ids[0]!.length;
      const result = await runSession(
        session,
        {
          input_ids: new OrtTensor('int64', BigInt64Array.from(ids.flat(), BigInt), [batch, seq]),
          attention_mask: new OrtTensor('int64', BigInt64Array.from(masks.flat(), BigInt), [batch, seq]),
        },
        dir,
      );
      await session.release();
      expect(result.logits!.dims).toEqual([batch, seq, VOCAB]);
      const got = result.logits!.data as Float32Array;
      const stored = new Map(tensors.map((t) => [t.name, roundTo(t.values, c.dtype)]));
      let largest = 0;
      let worst = 0;
      for (let b = 0; b < batch; b++) {
        const reference = referenceLogits(c, stored, ids[b]!, masks[b]!);
        reference.forEach((row, t) => {
          if (row === undefined) return;
          for (let v = 0; v < VOCAB; v++) {
            largest = Math.max(largest, Math.abs(row[v]!));
            worst = Math.max(worst, Math.abs(got[(b * seq + t) * VOCAB + v]! - row[v]!));
          }
        });
      }
      expect(largest).toBeGreaterThan(0.5);
      expect(worst).toBeLessThanOrEqual(1e-4 * largest);
      const analysis = await analyzeModel(built.model);
      expect(analysis.task).toMatchObject({ kind: 'causal-lm', vocab: VOCAB });
      // 7 linear layers per block, + lm_head when untied (a tied one is the embedding: averaged, as DESIGN §2 says).
      expect(analysis.linearLayers.length).toBe(LAYERS * 7 + (c.tied ? 0 : 1));
    });
  });

  it('a checkpoint missing a tensor the config needs, or with a wrong shape, is CHECKPOINT_MISMATCH naming it', async () => {
    const c = CASES[0]!;
    const { config, tensors } = makeCheckpoint(c, 7);
    const missing = join(work, 'missing');
    writeHfDirectory(
      missing,
      config,
      tensors.filter((t) => t.name !== 'model.layers.1.mlp.up_proj.weight'),
    );
    await expect(buildHfModel(missing)).rejects.toMatchObject({
      code: 'CHECKPOINT_MISMATCH',
      message: expect.stringContaining('model.layers.1.mlp.up_proj.weight'),
    });
    const wrong = join(work, 'wrong');
    writeHfDirectory(wrong, { ...config, intermediate_size: FFN + 1 }, tensors);
    await expect(buildHfModel(wrong)).rejects.toMatchObject({ code: 'CHECKPOINT_MISMATCH', message: expect.stringContaining('[40, 48]') });
  });
});
