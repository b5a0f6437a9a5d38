// A synthetic BERT-style classifier of any size, written as ONNX by gramfuse itself (no Python, no
// download): embeddings, N encoder layers (multi-head self-attention with an additive padding mask, GELU
// feed-forward, post-LayerNorm), pooler and classifier — the graph shape of a Hugging Face BERT export, with
// seeded random weights. bench/scale uses the BERT-base size (hidden 768, FFN 3072, 12 layers, 12 heads).
import { GraphProto, ModelProto, NodeProto, ValueInfoProto } from '../proto/index.js';
import { type OnnxModel, saveModel } from '../shared/onnx/index.js';
import { graphBuilder } from './graph-builder.js';

export interface SyntheticBertOptions {
  readonly layers: number;
  readonly hidden: number;
  readonly ffn: number;
  readonly heads: number;
  readonly vocab: number;
  readonly maxPositions: number;
  readonly labels: number;
  readonly seed: number;
}

export const BERT_BASE: SyntheticBertOptions = {
  layers: 12,
  hidden: 768,
  ffn: 3072,
  heads: 12,
  vocab: 30522,
  maxPositions: 512,
  labels: 14,
  seed: 1,
};

export function syntheticBert(o: SyntheticBertOptions): OnnxModel {
  const { initializer, node, floats, constant, op, ints, int, float } = graphBuilder(o.seed);
  const linear = (x: string, prefix: string, inDim: number, outDim: number): string =>
    op('Add', [op('MatMul', [x, floats(`${prefix}.weight`, [inDim, outDim], 'random')]), floats(`${prefix}.bias`, [outDim], 'zeros')]);
  const layerNorm = (x: string, prefix: string): string =>
    op(
      'LayerNormalization',
      [x, floats(`${prefix}.weight`, [o.hidden], 'ones'), floats(`${prefix}.bias`, [o.hidden], 'zeros')],
      [int('axis', -1), float('epsilon', 1e-12)],
    );

  const dh = o.hidden / o.heads;
  const seqLength = op('Gather', [op('Shape', ['input_ids']), constant([1], 'int64', [])], [int('axis', 0)]);
  const positions = op('Slice', [
    floats('bert.embeddings.position_embeddings.weight', [o.maxPositions, o.hidden], 'random'),
    constant([0], 'int64'),
    op('Unsqueeze', [seqLength, constant([0], 'int64')]),
    constant([0], 'int64'),
  ]);
  const words = op('Gather', [floats('bert.embeddings.word_embeddings.weight', [o.vocab, o.hidden], 'random'), 'input_ids']);
  let x = layerNorm(op('Add', [words, positions]), 'bert.embeddings.LayerNorm');
  const padding = op('Mul', [
    op('Sub', [constant([1], 'float', []), op('Cast', ['attention_mask'], [int('to', 1)])]),
    constant([-10000], 'float', []),
  ]);
  const mask = op('Unsqueeze', [padding, constant([1, 2], 'int64')]);
  const headShape = constant([0, 0, o.heads, dh], 'int64');
  for (let l = 0; l < o.layers; l++) {
    const p = `bert.encoder.layer.${l}`;
    const q = op(
      'Transpose',
      [op('Reshape', [linear(x, `${p}.attention.self.query`, o.hidden, o.hidden), headShape])],
      [ints('perm', [0, 2, 1, 3])],
    );
    const k = op(
      'Transpose',
      [op('Reshape', [linear(x, `${p}.attention.self.key`, o.hidden, o.hidden), headShape])],
      [ints('perm', [0, 2, 3, 1])],
    );
    const v = op(
      'Transpose',
      [op('Reshape', [linear(x, `${p}.attention.self.value`, o.hidden, o.hidden), headShape])],
      [ints('perm', [0, 2, 1, 3])],
    );
    const scores = op('Add', [op('Mul', [op('MatMul', [q, k]), constant([1 / Math.sqrt(dh)], 'float', [])]), mask]);
    const context = op('Reshape', [
      op('Transpose', [op('MatMul', [op('Softmax', [scores], [int('axis', -1)]), v])], [ints('perm', [0, 2, 1, 3])]),
      constant([0, 0, o.hidden], 'int64'),
    ]);
    const attended = layerNorm(
      op('Add', [linear(context, `${p}.attention.output.dense`, o.hidden, o.hidden), x]),
      `${p}.attention.output.LayerNorm`,
    );
    const h = linear(attended, `${p}.intermediate.dense`, o.hidden, o.ffn);
    const gelu = op('Mul', [
      op('Mul', [h, constant([0.5], 'float', [])]),
      op('Add', [constant([1], 'float', []), op('Erf', [op('Div', [h, constant([Math.SQRT2], 'float', [])])])]),
    ]);
    x = layerNorm(op('Add', [linear(gelu, `${p}.output.dense`, o.ffn, o.hidden), attended]), `${p}.output.LayerNorm`);
  }
  const first = op('Gather', [x, constant([0], 'int64', [])], [int('axis', 1)]);
  const pooled = op('Tanh', [linear(first, 'bert.pooler.dense', o.hidden, o.hidden)]);
  const logits = linear(pooled, 'classifier', o.hidden, o.labels);
  node.push(NodeProto.fromPartial({ opType: 'Identity', name: 'logits', input: [logits], output: ['logits'] }));

  const input = (name: string): ValueInfoProto =>
    ValueInfoProto.fromPartial({
      name,
      type: { tensorType: { elemType: 7, shape: { dim: [{ dimParam: 'batch' }, { dimParam: 'sequence' }] } } },
    });
  const graph = GraphProto.fromPartial({
    name: 'synthetic-bert',
    node,
    initializer,
    input: [input('input_ids'), input('attention_mask')],
    output: [
      ValueInfoProto.fromPartial({
        name: 'logits',
        type: { tensorType: { elemType: 1, shape: { dim: [{ dimParam: 'batch' }, { dimValue: BigInt(o.labels) }] } } },
      }),
    ],
  });
  return {
    proto: ModelProto.fromPartial({
      irVersion: 8n,
      producerName: 'gramfuse bench/synthetic-bert',
      opsetImport: [{ domain: '', version: 17n }],
      graph,
    }),
    baseDir: undefined,
    source: `synthetic BERT (${o.layers} layers, hidden ${o.hidden}, FFN ${o.ffn})`,
  };
}

export async function writeSyntheticBert(path: string, options: SyntheticBertOptions): Promise<void> {
  await saveModel(syntheticBert(options), path);
}
