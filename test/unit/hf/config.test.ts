// config.json → the builder's configuration: transformers' defaults, the supported list, rotary scaling.
import { describe, expect, it } from 'vitest';

import { type DecoderConfig, parseHfConfig, rotaryInverseFrequencies, SUPPORTED_ARCHITECTURES } from '../../../shared/hf/index.js';

const llama = {
  architectures: ['LlamaForSequenceClassification'],
  model_type: 'llama',
  vocab_size: 8192,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  pad_token_id: 0,
  id2label: { 0: 'a', 1: 'b', 2: 'c' },
};
const parse = (config: object) => parseHfConfig(JSON.stringify(config), 'dir/config.json') as DecoderConfig;

describe('parseHfConfig', () => {
  it('reads sizes and resolves defaults as transformers does', () => {
    const c = parse(llama);
    expect(c).toMatchObject({ architecture: 'LlamaForSequenceClassification', head: 'sequence-classification', headDim: 32, kvHeads: 1 });
    expect(c).toMatchObject({ labels: 3, padTokenId: 0, tiedEmbeddings: false, qkvBias: false, ropeScaling: { type: 'default' } });
    const { num_key_value_heads: _, ...noKv } = llama;
    expect(parse(noKv).kvHeads).toBe(2);
    expect(parse({ ...llama, head_dim: 48 }).headDim).toBe(48);
    expect(parse({ ...llama, architectures: ['Qwen2ForCausalLM'] })).toMatchObject({
      modelType: 'qwen2',
      qkvBias: true,
      oBias: false,
      head: 'causal-lm',
    });
    expect(parse({ ...llama, architectures: ['MistralForCausalLM'], sliding_window: 7 }).slidingWindow).toBe(7);
    expect(parse({ ...llama, architectures: ['Qwen2ForCausalLM'], sliding_window: 7 }).slidingWindow).toBeUndefined();
    expect(parse({ ...llama, rope_theta: undefined, rope_parameters: { rope_type: 'default', rope_theta: 5e5 } }).ropeTheta).toBe(5e5);
  });

  it('an architecture outside the list is HF_UNSUPPORTED naming it and the supported list', () => {
    let caught: unknown;
    try {
      parse({ ...llama, architectures: ['GPT2LMHeadModel'] });
    } catch (error) {
      caught = error;
    }
    expect(caught).toMatchObject({ code: 'HF_UNSUPPORTED', message: expect.stringContaining('GPT2LMHeadModel') });
    for (const name of SUPPORTED_ARCHITECTURES) expect((caught as Error).message).toContain(name);
    expect(() => parse({ ...llama, architectures: undefined })).toThrow(/no "architectures"/);
  });

  it('rejects what it cannot build: other rope types, incomplete llama3 scaling, other activations, bad sizes', () => {
    expect(() => parse({ ...llama, rope_scaling: { rope_type: 'yarn', factor: 4 } })).toThrow(/HF_UNSUPPORTED|yarn/);
    expect(() => parse({ ...llama, rope_scaling: { rope_type: 'llama3', factor: 8 } })).toThrow(/low_freq_factor/);
    expect(() => parse({ ...llama, hidden_act: 'gelu' })).toThrow(/hidden_act gelu/);
    expect(() => parse({ ...llama, num_key_value_heads: 3 })).toThrow(/not a multiple/);
    expect(() => parse({ ...llama, hidden_size: -1 })).toThrow(/hidden_size/);
    expect(() => parseHfConfig('{', 'x/config.json')).toThrow(/not JSON/);
  });

  it('encoders: BERT and RoBERTa classifiers, with their position rules and defaults', () => {
    const bert = {
      architectures: ['BertForSequenceClassification'],
      vocab_size: 100,
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 1,
      num_attention_heads: 4,
      num_labels: 3,
    };
    expect(parseHfConfig(JSON.stringify(bert), 'c')).toMatchObject({
      family: 'encoder',
      modelType: 'bert',
      typeVocab: 2,
      padTokenId: 0,
      labels: 3,
    });
    const roberta = parseHfConfig(JSON.stringify({ ...bert, architectures: ['RobertaForSequenceClassification'] }), 'c');
    expect(roberta).toMatchObject({ modelType: 'roberta', padTokenId: 1, layerNormEps: 1e-12 });
    expect(() => parseHfConfig(JSON.stringify({ ...bert, hidden_act: 'gelu_new' }), 'c')).toThrow(/hidden_act gelu_new/);
    expect(() => parseHfConfig(JSON.stringify({ ...bert, position_embedding_type: 'relative_key' }), 'c')).toThrow(/relative_key/);
  });

  it('llama3 rotary scaling: high frequencies kept, low ones divided by the factor, the band between interpolated', () => {
    // Llama 3.1 8B: head_dim 128, θ 500000, factor 8, low 1, high 4, original context 8192.
    const scaling = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 } as const;
    const plain = rotaryInverseFrequencies(128, 5e5, { type: 'default' });
    const scaled = rotaryInverseFrequencies(128, 5e5, scaling);
    expect(plain[1]).toBeCloseTo(1 / 5e5 ** (2 / 128), 12);
    let kept = 0;
    let divided = 0;
    let between = 0;
    for (let i = 0; i < 64; i++) {
      const wavelen = (2 * Math.PI) / plain[i]!;
      if (wavelen < 8192 / 4) {
        expect(scaled[i]).toBe(plain[i]);
        kept++;
      } else if (wavelen > 8192) {
        expect(scaled[i]! * 8).toBeCloseTo(plain[i]!, 15);
        divided++;
      } else {
        expect(scaled[i]!).toBeLessThan(plain[i]!);
        expect(scaled[i]!).toBeGreaterThan(plain[i]! / 8);
        between++;
      }
    }
    expect(Math.min(kept, divided, between)).toBeGreaterThan(0);
  });
});
