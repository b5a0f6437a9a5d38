// A synthetic decoder LLM of any size, written as ONNX by gramfuse itself: the graph an HF/optimum export of a
// Llama or Qwen2 causal LM has (token embedding, per block RMSNorm → q/k/v with rotary position embedding →
// grouped-query attention under a causal and a padding mask → o_proj, RMSNorm → SwiGLU gate/up → down, a final
// RMSNorm and the lm_head, tied to the embedding or not), with seeded random float32 or float16 weights. Rotary tables and
// masks are Constant nodes (structure), so the parameters are exactly the checkpoint's. Used by tests (tiny
// presets, vocabulary of the fixtures' tokenizer) and benchmarks (qwen2-0.5b, llama-1b). A float16 model computes in
// float16 throughout (weights, constants, activations, logits), as a `--dtype fp16` optimum export does.
import { GraphProto, ModelProto, NodeProto, ValueInfoProto } from '../proto/index.js';
import { type OnnxModel, saveModel } from '../shared/onnx/index.js';
import { graphBuilder } from './graph-builder.js';

export interface SyntheticDecoderOptions {
  readonly family: 'llama' | 'qwen2';
  readonly layers: number;
  readonly hidden: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly ffn: number;
  readonly vocab: number;
  /** lm_head shares the embedding matrix (Qwen2-0.5B does; Llama-3 8B does not). */
  readonly tied: boolean;
  /** Rows of the rotary and causal-mask tables: the longest sequence the graph takes. */
  readonly maxPositions: number;
  readonly ropeTheta: number;
  readonly seed: number;
  /** @default 'float32' */
  readonly dtype?: 'float32' | 'float16';
}

export const DECODER_PRESETS = {
  'qwen2-0.5b': {
    family: 'qwen2',
    layers: 24,
    hidden: 896,
    heads: 14,
    kvHeads: 2,
    ffn: 4864,
    vocab: 151936,
    tied: true,
    maxPositions: 512,
    ropeTheta: 1e6,
    seed: 1,
  },
  'llama-1b': {
    family: 'llama',
    layers: 16,
    hidden: 2048,
    heads: 32,
    kvHeads: 8,
    ffn: 8192,
    vocab: 128256,
    tied: true,
    maxPositions: 512,
    ropeTheta: 5e5,
    seed: 1,
  },
  'tiny-llama': {
    family: 'llama',
    layers: 2,
    hidden: 64,
    heads: 4,
    kvHeads: 2,
    ffn: 128,
    vocab: 8192,
    tied: false,
    maxPositions: 128,
    ropeTheta: 1e4,
    seed: 1,
  },
  'tiny-qwen2': {
    family: 'qwen2',
    layers: 2,
    hidden: 64,
    heads: 4,
    kvHeads: 2,
    ffn: 128,
    vocab: 8192,
    tied: true,
    maxPositions: 128,
    ropeTheta: 1e6,
    seed: 1,
  },
} as const satisfies Record<string, SyntheticDecoderOptions>;
export type DecoderPreset = keyof typeof DECODER_PRESETS;

export function syntheticDecoder(o: SyntheticDecoderOptions): OnnxModel {
  if (o.hidden % o.heads !== 0 || o.heads % o.kvHeads !== 0)
    throw new Error(`synthetic decoder: hidden ${o.hidden} must divide by heads ${o.heads}, and heads by kvHeads ${o.kvHeads}`);
  const { initializer, node, floats, constant, op: one, ops, ints, int, floatType } = graphBuilder(o.seed, o.dtype);
  const scalar = (v: number): string => constant([v], 'float', []);
  const linear = (x: string, prefix: string, inDim: number, outDim: number, bias: boolean): string => {
    const y = one('MatMul', [x, floats(`${prefix}.weight`, [inDim, outDim], 'random')]);
    return bias ? one('Add', [y, floats(`${prefix}.bias`, [outDim], 'zeros')]) : y;
  };
  const rmsNorm = (x: string, prefix: string): string => {
    const variance = one('ReduceMean', [one('Pow', [x, scalar(2)])], [ints('axes', [-1]), int('keepdims', 1)]);
    const normed = one('Mul', [x, one('Reciprocal', [one('Sqrt', [one('Add', [variance, scalar(1e-6)])])])]);
    return one('Mul', [normed, floats(`${prefix}.weight`, [o.hidden], 'ones')]);
  };

  const dh = o.hidden / o.heads;
  const group = o.heads / o.kvHeads;
  // Rotary tables [maxPositions, dh] (cos and sin of position × inverse frequency, halves repeated) and the causal
  // mask [maxPositions, maxPositions] (0 on and below the diagonal, -1e4 above), as constants sliced to the sequence.
  const cos = new Float32Array(o.maxPositions * dh);
  const sin = new Float32Array(o.maxPositions * dh);
  for (let p = 0; p < o.maxPositions; p++)
    for (let i = 0; i < dh; i++) {
      const angle = p / o.ropeTheta ** ((2 * (i % (dh / 2))) / dh);
      cos[p * dh + i] = Math.cos(angle);
      sin[p * dh + i] = Math.sin(angle);
    }
  const causal = new Float32Array(o.maxPositions * o.maxPositions);
  for (let r = 0; r < o.maxPositions; r++) for (let c = r + 1; c < o.maxPositions; c++) causal[r * o.maxPositions + c] = -1e4;
  const seq = one('Unsqueeze', [
    one('Gather', [one('Shape', ['input_ids']), constant([1], 'int64', [])], [int('axis', 0)]),
    constant([0], 'int64'),
  ]);
  const zero = constant([0], 'int64');
  const cosT = one('Slice', [constant(cos, 'float', [o.maxPositions, dh]), zero, seq, zero]);
  const sinT = one('Slice', [constant(sin, 'float', [o.maxPositions, dh]), zero, seq, zero]);
  const causalT = one('Slice', [
    one('Slice', [constant(causal, 'float', [o.maxPositions, o.maxPositions]), zero, seq, zero]),
    zero,
    seq,
    constant([1], 'int64'),
  ]);
  const padding = one('Unsqueeze', [
    one('Mul', [one('Sub', [scalar(1), one('Cast', ['attention_mask'], [int('to', floatType)])]), scalar(-1e4)]),
    constant([1, 2], 'int64'),
  ]);
  const mask = one('Add', [causalT, padding]); // [batch, 1, seq, seq]
  const rotate = (x: string): string => {
    // x·cos + rotate_half(x)·sin, rotate_half(x) = [−x₂, x₁] over the last axis.
    const [x1, x2] = ops('Split', [x, constant([dh / 2, dh / 2], 'int64')], [int('axis', -1)], 2) as [string, string];
    const half = one('Concat', [one('Neg', [x2]), x1], [int('axis', -1)]);
    return one('Add', [one('Mul', [x, cosT]), one('Mul', [half, sinT])]);
  };
  const heads = (x: string, n: number): string =>
    one('Transpose', [one('Reshape', [x, constant([0, 0, n, dh], 'int64')])], [ints('perm', [0, 2, 1, 3])]); // [b, n, s, dh]
  const repeatKv = (x: string): string => {
    if (group === 1) return x;
    const expanded = one('Expand', [one('Unsqueeze', [x, constant([2], 'int64')]), constant([1, 1, group, 1, 1], 'int64')]);
    return one('Reshape', [expanded, constant([0, o.heads, -1, dh], 'int64')]);
  };

  const embedding = floats('model.embed_tokens.weight', [o.vocab, o.hidden], 'random');
  let x = one('Gather', [embedding, 'input_ids']);
  const bias = o.family === 'qwen2';
  for (let l = 0; l < o.layers; l++) {
    const p = `model.layers.${l}`;
    const h = rmsNorm(x, `${p}.input_layernorm`);
    const q = rotate(heads(linear(h, `${p}.self_attn.q_proj`, o.hidden, o.hidden, bias), o.heads));
    const k = repeatKv(rotate(heads(linear(h, `${p}.self_attn.k_proj`, o.hidden, o.kvHeads * dh, bias), o.kvHeads)));
    const v = repeatKv(heads(linear(h, `${p}.self_attn.v_proj`, o.hidden, o.kvHeads * dh, bias), o.kvHeads));
    const scores = one('Add', [
      one('Mul', [one('MatMul', [q, one('Transpose', [k], [ints('perm', [0, 1, 3, 2])])]), scalar(1 / Math.sqrt(dh))]),
      mask,
    ]);
    const context = one('Reshape', [
      one('Transpose', [one('MatMul', [one('Softmax', [scores], [int('axis', -1)]), v])], [ints('perm', [0, 2, 1, 3])]),
      constant([0, 0, o.hidden], 'int64'),
    ]);
    x = one('Add', [x, linear(context, `${p}.self_attn.o_proj`, o.hidden, o.hidden, false)]);
    const m = rmsNorm(x, `${p}.post_attention_layernorm`);
    const gate = linear(m, `${p}.mlp.gate_proj`, o.hidden, o.ffn, false);
    const up = linear(m, `${p}.mlp.up_proj`, o.hidden, o.ffn, false);
    const swiglu = one('Mul', [one('Mul', [gate, one('Sigmoid', [gate])]), up]);
    x = one('Add', [x, linear(swiglu, `${p}.mlp.down_proj`, o.ffn, o.hidden, false)]);
  }
  const final = rmsNorm(x, 'model.norm');
  const logits = o.tied
    ? one('MatMul', [final, one('Transpose', [embedding], [ints('perm', [1, 0])])])
    : linear(final, 'lm_head', o.hidden, o.vocab, false);
  node.push(NodeProto.fromPartial({ opType: 'Identity', name: 'logits', input: [logits], output: ['logits'] }));

  const input = (name: string): ValueInfoProto =>
    ValueInfoProto.fromPartial({
      name,
      type: { tensorType: { elemType: 7, shape: { dim: [{ dimParam: 'batch' }, { dimParam: 'sequence' }] } } },
    });
  const graph = GraphProto.fromPartial({
    name: `synthetic-${o.family}`,
    node,
    initializer,
    input: [input('input_ids'), input('attention_mask')],
    output: [
      ValueInfoProto.fromPartial({
        name: 'logits',
        type: {
          tensorType: {
            elemType: floatType,
            shape: { dim: [{ dimParam: 'batch' }, { dimParam: 'sequence' }, { dimValue: BigInt(o.vocab) }] },
          },
        },
      }),
    ],
  });
  return {
    proto: ModelProto.fromPartial({
      irVersion: 8n,
      producerName: 'gramfuse bench/synthetic-decoder',
      opsetImport: [{ domain: '', version: 17n }],
      graph,
    }),
    baseDir: undefined,
    source: `synthetic ${o.dtype ?? 'float32'} ${o.family} (${o.layers} layers, hidden ${o.hidden}, ${o.heads}/${o.kvHeads} heads, FFN ${o.ffn}, vocab ${o.vocab}${o.tied ? ', tied' : ''})`,
  };
}

/** Writes the model; `externalData` keeps the tensors in `<path>.data` (what models past 2 GB need). */
export async function writeSyntheticDecoder(path: string, options: SyntheticDecoderOptions, externalData = false): Promise<void> {
  await saveModel(syntheticDecoder(options), path, externalData ? { externalData: 'always' } : {});
}
