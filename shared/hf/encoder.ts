// BertForSequenceClassification and RobertaForSequenceClassification as an ONNX graph, step for step transformers'
// forward (modeling_bert.py, modeling_roberta.py): word + position + token-type embeddings → LayerNorm; per layer
// self-attention (q/k/v with biases, 1/√head_dim, additive padding mask) → output dense → LayerNorm(+ residual) →
// intermediate dense → exact gelu → output dense → LayerNorm(+ residual); the head reads the first token: BERT's pooler
// (dense → tanh) then `classifier`, RoBERTa's `classifier.dense` → tanh → `classifier.out_proj`. BERT's positions are
// 0..seq−1; RoBERTa's count from the padding index (cumsum of non-pad tokens × non-pad + pad id), as
// `create_position_ids_from_input_ids` does. Weights are MatMul(x, Transpose(W)) on the checkpoint's [out, in] tensors.
import type { EncoderConfig } from './config.js';
import type { GraphBuilder } from './graph-builder.js';

const MASKED = -1e9;

/** The graph's extra inputs beyond input_ids and attention_mask. */
export function encoderInputs(c: EncoderConfig): string[] {
  return c.modelType === 'bert' && c.typeVocab > 1 ? ['token_type_ids'] : [];
}

/** Builds the graph's nodes into `b`; returns the name of the logits tensor ([batch, labels]). */
export function buildEncoder(c: EncoderConfig, b: GraphBuilder): string {
  const { op, constant, ints, int, float, weight } = b;
  const scalar = (v: number): string => constant([v], 'float', []);
  const i64 = (v: number): string => constant([v], 'int64', []);
  const dh = c.hidden / c.heads;
  const prefix = c.modelType;
  const linear = (x: string, name: string, inDim: number, outDim: number): string => {
    const w = weight(`${name}.weight`, [outDim, inDim]);
    return op('Add', [op('MatMul', [x, op('Transpose', [w], [ints('perm', [1, 0])])]), weight(`${name}.bias`, [outDim])]);
  };
  const layerNorm = (x: string, name: string): string =>
    op(
      'LayerNormalization',
      [x, weight(`${name}.weight`, [c.hidden]), weight(`${name}.bias`, [c.hidden])],
      [int('axis', -1), float('epsilon', c.layerNormEps)],
    );
  const gelu = (x: string): string =>
    op('Mul', [op('Mul', [x, scalar(0.5)]), op('Add', [scalar(1), op('Erf', [op('Mul', [x, scalar(Math.SQRT1_2)])])])]);

  const shape = op('Shape', ['input_ids']);
  const seq = op('Gather', [shape, i64(1)], [int('axis', 0)]);
  let positions: string;
  if (c.modelType === 'roberta') {
    const nonPad = op('Cast', [op('Not', [op('Equal', ['input_ids', i64(c.padTokenId)])])], [int('to', 7)]);
    positions = op('Add', [op('Mul', [op('CumSum', [nonPad, i64(1)]), nonPad]), i64(c.padTokenId)]);
  } else positions = op('Range', [i64(0), seq, i64(1)]);
  const words = op('Gather', [weight(`${prefix}.embeddings.word_embeddings.weight`, [c.vocab, c.hidden]), 'input_ids']);
  const placed = op('Gather', [weight(`${prefix}.embeddings.position_embeddings.weight`, [c.maxPositions, c.hidden]), positions]);
  const typeTable = weight(`${prefix}.embeddings.token_type_embeddings.weight`, [c.typeVocab, c.hidden]);
  const types = op('Gather', [typeTable, encoderInputs(c).length > 0 ? 'token_type_ids' : i64(0)]);
  let x = layerNorm(op('Add', [op('Add', [words, types]), placed]), `${prefix}.embeddings.LayerNorm`);

  const mask = op('Unsqueeze', [
    op('Mul', [op('Sub', [scalar(1), op('Cast', ['attention_mask'], [int('to', 1)])]), scalar(MASKED)]),
    constant([1, 2], 'int64'),
  ]);
  const heads = (t: string): string =>
    op('Transpose', [op('Reshape', [t, constant([0, 0, c.heads, dh], 'int64')])], [ints('perm', [0, 2, 1, 3])]);
  for (let l = 0; l < c.layers; l++) {
    const p = `${prefix}.encoder.layer.${l}`;
    const q = heads(linear(x, `${p}.attention.self.query`, c.hidden, c.hidden));
    const k = heads(linear(x, `${p}.attention.self.key`, c.hidden, c.hidden));
    const v = heads(linear(x, `${p}.attention.self.value`, c.hidden, c.hidden));
    const scores = op('Add', [
      op('Mul', [op('MatMul', [q, op('Transpose', [k], [ints('perm', [0, 1, 3, 2])])]), scalar(1 / Math.sqrt(dh))]),
      mask,
    ]);
    const context = op('Reshape', [
      op('Transpose', [op('MatMul', [op('Softmax', [scores], [int('axis', -1)]), v])], [ints('perm', [0, 2, 1, 3])]),
      constant([0, 0, c.hidden], 'int64'),
    ]);
    x = layerNorm(op('Add', [linear(context, `${p}.attention.output.dense`, c.hidden, c.hidden), x]), `${p}.attention.output.LayerNorm`);
    const inner = gelu(linear(x, `${p}.intermediate.dense`, c.hidden, c.intermediate));
    x = layerNorm(op('Add', [linear(inner, `${p}.output.dense`, c.intermediate, c.hidden), x]), `${p}.output.LayerNorm`);
  }
  const first = op('Gather', [x, i64(0)], [int('axis', 1)]);
  if (c.modelType === 'bert') {
    const pooled = op('Tanh', [linear(first, 'bert.pooler.dense', c.hidden, c.hidden)]);
    return linear(pooled, 'classifier', c.hidden, c.labels);
  }
  const dense = op('Tanh', [linear(first, 'classifier.dense', c.hidden, c.hidden)]);
  return linear(dense, 'classifier.out_proj', c.hidden, c.labels);
}
