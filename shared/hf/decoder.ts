// Llama, Mistral and Qwen2 (…ForCausalLM, …ForSequenceClassification) as an ONNX graph, step for step transformers'
// forward (modeling_llama.py and its copies): token embedding; per block RMSNorm → q/k/v (Qwen2: with biases) →
// rotary embedding (positions 0..seq−1, inverse frequencies default or llama3-scaled) → grouped-query attention under
// a causal (and sliding-window) and a padding mask, scaled by 1/√head_dim → o_proj → residual; RMSNorm → SwiGLU
// (down(silu(gate(x)) · up(x))) → residual; final RMSNorm; the head: lm_head (tied to the embedding or not) over every
// position, or the score over every position read at the last token that is not the pad token (transformers' rule:
// the rightmost non-pad position; position 0 when every token is pad; without a pad_token_id, the last attended one).
// Every weight is used as MatMul(x, Transpose(W)) on the checkpoint's own [out, in] tensor, which is what
// shared/onnx's linear-layer analysis recognizes (orientation out_in); rotary tables and masks are computed in the
// graph from the sequence length, so no table grows with max_position_embeddings.
import type { DecoderConfig } from './config.js';
import { rotaryInverseFrequencies } from './config.js';
import type { GraphBuilder } from './graph-builder.js';

/** A large negative added to masked attention scores (finite: a fully masked row softmaxes to uniform, never NaN). */
const MASKED = -1e9;

/** Builds the graph's nodes into `b`; returns the name of the logits tensor. */
export function buildDecoder(c: DecoderConfig, b: GraphBuilder): string {
  const { op, ops, constant, ints, int, weight } = b;
  const scalar = (v: number): string => constant([v], 'float', []);
  const i64 = (v: number): string => constant([v], 'int64', []);
  const dh = c.headDim;
  const group = c.heads / c.kvHeads;
  const linear = (x: string, prefix: string, inDim: number, outDim: number, bias: boolean): string => {
    const w = weight(`${prefix}.weight`, [outDim, inDim]);
    const y = op('MatMul', [x, op('Transpose', [w], [ints('perm', [1, 0])])]);
    return bias ? op('Add', [y, weight(`${prefix}.bias`, [outDim])]) : y;
  };
  const rmsNorm = (x: string, name: string): string => {
    const variance = op('ReduceMean', [op('Pow', [x, scalar(2)])], [ints('axes', [-1]), int('keepdims', 1)]);
    const normed = op('Mul', [x, op('Reciprocal', [op('Sqrt', [op('Add', [variance, scalar(c.rmsNormEps)])])])]);
    return op('Mul', [normed, weight(`${name}.weight`, [c.hidden])]);
  };

  // Positions, rotary tables [seq, dh] and the additive mask [batch, 1, seq, seq], from the input's shape.
  const shape = op('Shape', ['input_ids']);
  const seq = op('Gather', [shape, i64(1)], [int('axis', 0)]);
  const positions = op('Range', [i64(0), seq, i64(1)]);
  const inverse = Float32Array.from(rotaryInverseFrequencies(dh, c.ropeTheta, c.ropeScaling));
  const freqs = op('Mul', [op('Unsqueeze', [op('Cast', [positions], [int('to', 1)]), constant([1], 'int64')]), constant(inverse, 'float')]);
  const angles = op('Concat', [freqs, freqs], [int('axis', -1)]);
  const cos = op('Cos', [angles]);
  const sin = op('Sin', [angles]);
  const rows = op('Unsqueeze', [positions, constant([1], 'int64')]);
  const cols = op('Unsqueeze', [positions, constant([0], 'int64')]);
  let masked = op('Greater', [cols, rows]);
  if (c.slidingWindow !== undefined) masked = op('Or', [masked, op('GreaterOrEqual', [op('Sub', [rows, cols]), i64(c.slidingWindow)])]);
  const causal = op('Where', [masked, scalar(MASKED), scalar(0)]);
  const padding = op('Unsqueeze', [
    op('Mul', [op('Sub', [scalar(1), op('Cast', ['attention_mask'], [int('to', 1)])]), scalar(MASKED)]),
    constant([1, 2], 'int64'),
  ]);
  const mask = op('Add', [causal, padding]);

  const rotate = (x: string): string => {
    // x·cos + rotate_half(x)·sin, rotate_half(x) = [−x₂, x₁] over the last axis.
    const [x1, x2] = ops('Split', [x, constant([dh / 2, dh / 2], 'int64')], [int('axis', -1)], 2) as [string, string];
    const half = op('Concat', [op('Neg', [x2]), x1], [int('axis', -1)]);
    return op('Add', [op('Mul', [x, cos]), op('Mul', [half, sin])]);
  };
  const heads = (x: string, n: number): string =>
    op('Transpose', [op('Reshape', [x, constant([0, 0, n, dh], 'int64')])], [ints('perm', [0, 2, 1, 3])]);
  const repeatKv = (x: string): string => {
    if (group === 1) return x;
    const expanded = op('Expand', [op('Unsqueeze', [x, constant([2], 'int64')]), constant([1, 1, group, 1, 1], 'int64')]);
    return op('Reshape', [expanded, constant([0, c.heads, -1, dh], 'int64')]);
  };

  const embedding = weight('model.embed_tokens.weight', [c.vocab, c.hidden]);
  let x = op('Gather', [embedding, 'input_ids']);
  const qDim = c.heads * dh;
  const kvDim = c.kvHeads * dh;
  for (let l = 0; l < c.layers; l++) {
    const p = `model.layers.${l}`;
    const h = rmsNorm(x, `${p}.input_layernorm`);
    const q = rotate(heads(linear(h, `${p}.self_attn.q_proj`, c.hidden, qDim, c.qkvBias), c.heads));
    const k = repeatKv(rotate(heads(linear(h, `${p}.self_attn.k_proj`, c.hidden, kvDim, c.qkvBias), c.kvHeads)));
    const v = repeatKv(heads(linear(h, `${p}.self_attn.v_proj`, c.hidden, kvDim, c.qkvBias), c.kvHeads));
    const scores = op('Add', [
      op('Mul', [op('MatMul', [q, op('Transpose', [k], [ints('perm', [0, 1, 3, 2])])]), scalar(1 / Math.sqrt(dh))]),
      mask,
    ]);
    const context = op('Reshape', [
      op('Transpose', [op('MatMul', [op('Softmax', [scores], [int('axis', -1)]), v])], [ints('perm', [0, 2, 1, 3])]),
      constant([0, 0, qDim], 'int64'),
    ]);
    x = op('Add', [x, linear(context, `${p}.self_attn.o_proj`, qDim, c.hidden, c.oBias)]);
    const m = rmsNorm(x, `${p}.post_attention_layernorm`);
    const gate = linear(m, `${p}.mlp.gate_proj`, c.hidden, c.intermediate, c.mlpBias);
    const up = linear(m, `${p}.mlp.up_proj`, c.hidden, c.intermediate, c.mlpBias);
    const swiglu = op('Mul', [op('Mul', [gate, op('Sigmoid', [gate])]), up]);
    x = op('Add', [x, linear(swiglu, `${p}.mlp.down_proj`, c.intermediate, c.hidden, c.mlpBias)]);
  }
  const final = rmsNorm(x, 'model.norm');
  if (c.head === 'causal-lm') {
    if (c.tiedEmbeddings) return op('MatMul', [final, op('Transpose', [embedding], [ints('perm', [1, 0])])]);
    return linear(final, 'lm_head', c.hidden, c.vocab, false);
  }
  // Sequence classification: score every position, keep the last non-pad one's (argmax of position × non-pad).
  const scored = linear(final, 'score', c.hidden, c.labels, false);
  // Without a pad_token_id (transformers then refuses batches), the attention mask says which tokens are real.
  const nonPad =
    c.padTokenId === undefined
      ? op('Cast', ['attention_mask'], [int('to', 6)])
      : op('Cast', [op('Not', [op('Equal', ['input_ids', i64(c.padTokenId)])])], [int('to', 6)]);
  const last = op('ArgMax', [op('Mul', [op('Cast', [positions], [int('to', 6)]), nonPad])], [int('axis', -1), int('keepdims', 0)]);
  const batch = op('Gather', [shape, i64(0)], [int('axis', 0)]);
  const rowOf = op('Add', [last, op('Mul', [op('Range', [i64(0), batch, i64(1)]), seq])]);
  return op('Gather', [op('Reshape', [scored, constant([-1, c.labels], 'int64')]), rowOf], [int('axis', 0)]);
}
