// A Hugging Face `config.json`, parsed with zod into what the builder needs: the architecture (one of the supported
// list, anything else a coded error naming it) and its sizes, with transformers' own defaults where a key is absent.
import { z } from 'zod';

import { ErrorCode, GramfuseError, schemaProblems } from '../errors.js';

const positive = z.number().int().positive();
const tokenId = z.union([z.number().int(), z.array(z.number().int()), z.null()]).optional();

/** The `architectures[0]` values the builder turns into a graph, each equal to transformers' forward. */
export const SUPPORTED_ARCHITECTURES = [
  'LlamaForCausalLM',
  'LlamaForSequenceClassification',
  'MistralForCausalLM',
  'MistralForSequenceClassification',
  'Qwen2ForCausalLM',
  'Qwen2ForSequenceClassification',
  'BertForSequenceClassification',
  'RobertaForSequenceClassification',
] as const;
export type SupportedArchitecture = (typeof SUPPORTED_ARCHITECTURES)[number];

/** Rotary frequencies: transformers' `default` (plain θ^(−2i/d)) or `llama3` (Llama 3.1's band-wise scaling). */
export type RopeScaling =
  | { readonly type: 'default' }
  | {
      readonly type: 'llama3';
      readonly factor: number;
      readonly lowFreqFactor: number;
      readonly highFreqFactor: number;
      readonly originalMaxPositions: number;
    };

/** A decoder's configuration as the builder uses it (every default resolved). */
export interface DecoderConfig {
  readonly family: 'decoder';
  readonly architecture: SupportedArchitecture;
  /** `llama`, `mistral` or `qwen2`: decides the biases (Qwen2 has q/k/v biases) and the sliding window rule. */
  readonly modelType: 'llama' | 'mistral' | 'qwen2';
  readonly head: 'causal-lm' | 'sequence-classification';
  readonly vocab: number;
  readonly hidden: number;
  readonly intermediate: number;
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  /** Per-head width: `head_dim` when given, else hidden / heads. */
  readonly headDim: number;
  readonly rmsNormEps: number;
  readonly ropeTheta: number;
  readonly ropeScaling: RopeScaling;
  /** q/k/v (and o, for Llama's `attention_bias`) projections carry biases. */
  readonly qkvBias: boolean;
  readonly oBias: boolean;
  readonly mlpBias: boolean;
  /** lm_head reads the embedding matrix (no `lm_head.weight` in the checkpoint). */
  readonly tiedEmbeddings: boolean;
  /** Keys further back than this are masked (Mistral; Qwen2 with use_sliding_window); undefined: none. */
  readonly slidingWindow: number | undefined;
  /** Sequence classification: the score head reads the last token that is not this one (transformers' rule). */
  readonly padTokenId: number | undefined;
  /** Sequence classification: logits per example. */
  readonly labels: number;
  /** Sequence classification: label names in logit order (config.json's id2label), when it names every one. */
  readonly labelNames: readonly string[] | undefined;
  /** The dtype the checkpoint says it was saved in (`torch_dtype` / `dtype`), for messages and the way back out. */
  readonly torchDtype: string | undefined;
}

/** A BERT or RoBERTa sequence classifier's configuration (post-LayerNorm encoder, absolute positions). */
export interface EncoderConfig {
  readonly family: 'encoder';
  readonly architecture: SupportedArchitecture;
  /** `bert`: positions 0..seq−1, a pooler (dense + tanh on the first token) then the classifier; `roberta`: positions
   * from the padding index (cumsum of non-pad tokens + pad id), the classifier head dense → tanh → out_proj. */
  readonly modelType: 'bert' | 'roberta';
  readonly vocab: number;
  readonly hidden: number;
  readonly intermediate: number;
  readonly layers: number;
  readonly heads: number;
  readonly layerNormEps: number;
  readonly maxPositions: number;
  readonly typeVocab: number;
  readonly padTokenId: number;
  readonly labels: number;
  readonly labelNames: readonly string[] | undefined;
  readonly torchDtype: string | undefined;
}

export type HfModelConfig = DecoderConfig | EncoderConfig;

const encoderSchema = z
  .object({
    vocab_size: positive,
    hidden_size: positive,
    intermediate_size: positive,
    num_hidden_layers: positive,
    num_attention_heads: positive,
    hidden_act: z.string().default('gelu'),
    layer_norm_eps: z.number().positive().default(1e-12),
    max_position_embeddings: positive.default(512),
    type_vocab_size: positive.default(2),
    position_embedding_type: z.string().default('absolute'),
    pad_token_id: z.number().int().nullable().optional(),
    num_labels: positive.optional(),
    id2label: z.record(z.string(), z.string()).optional(),
    torch_dtype: z.string().nullable().optional(),
    dtype: z.string().nullable().optional(),
  })
  .loose();

function parseEncoder(raw: unknown, path: string, architecture: SupportedArchitecture): EncoderConfig {
  const parsed = encoderSchema.safeParse(raw);
  if (!parsed.success)
    throw new GramfuseError(ErrorCode.InvalidArgument, `${path}: ${schemaProblems(parsed.error.issues, 8)}`, { facts: { path } });
  const c = parsed.data;
  if (c.hidden_act !== 'gelu')
    throw unsupported(path, 'hidden_act', c.hidden_act, `the ${architecture} builder computes transformers' exact (erf) gelu`);
  if (c.position_embedding_type !== 'absolute')
    throw unsupported(path, 'position_embedding_type', c.position_embedding_type, 'gramfuse builds absolute position embeddings');
  if (c.hidden_size % c.num_attention_heads !== 0)
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `${path}: hidden_size ${c.hidden_size} is not a multiple of num_attention_heads ${c.num_attention_heads}; the config is inconsistent`,
      { facts: { path } },
    );
  const labels = c.num_labels ?? (c.id2label === undefined ? 2 : Object.keys(c.id2label).length);
  const labelNames = Array.from({ length: labels }, (_, i) => c.id2label?.[String(i)]);
  const modelType = architecture.startsWith('Roberta') ? 'roberta' : 'bert';
  return {
    family: 'encoder',
    architecture,
    modelType,
    vocab: c.vocab_size,
    hidden: c.hidden_size,
    intermediate: c.intermediate_size,
    layers: c.num_hidden_layers,
    heads: c.num_attention_heads,
    layerNormEps: c.layer_norm_eps,
    maxPositions: c.max_position_embeddings,
    typeVocab: c.type_vocab_size,
    // RoBERTa's positions count from its padding index (transformers: pad_token_id, 1 unless configured).
    padTokenId: c.pad_token_id ?? (modelType === 'roberta' ? 1 : 0),
    labels,
    labelNames: labelNames.every((n) => n !== undefined) ? labelNames : undefined,
    torchDtype: c.torch_dtype ?? c.dtype ?? undefined,
  };
}

const ropeObject = z
  .object({
    rope_type: z.string().optional(),
    type: z.string().optional(),
    rope_theta: z.number().positive().optional(),
    factor: z.number().positive().optional(),
    low_freq_factor: z.number().positive().optional(),
    high_freq_factor: z.number().positive().optional(),
    original_max_position_embeddings: positive.optional(),
  })
  .loose();

const decoderSchema = z
  .object({
    architectures: z.array(z.string()).min(1),
    model_type: z.string().optional(),
    vocab_size: positive,
    hidden_size: positive,
    intermediate_size: positive,
    num_hidden_layers: positive,
    num_attention_heads: positive,
    num_key_value_heads: positive.nullable().optional(),
    head_dim: positive.nullable().optional(),
    hidden_act: z.string().default('silu'),
    rms_norm_eps: z.number().positive().default(1e-6),
    rope_theta: z.number().positive().optional(),
    rope_scaling: ropeObject.nullable().optional(),
    rope_parameters: ropeObject.nullable().optional(),
    attention_bias: z.boolean().default(false),
    mlp_bias: z.boolean().default(false),
    tie_word_embeddings: z.boolean().optional(),
    sliding_window: positive.nullable().optional(),
    use_sliding_window: z.boolean().optional(),
    pad_token_id: tokenId,
    num_labels: positive.optional(),
    id2label: z.record(z.string(), z.string()).optional(),
    torch_dtype: z.string().nullable().optional(),
    dtype: z.string().nullable().optional(),
  })
  .loose();

const unsupported = (path: string, what: string, found: string, next: string): GramfuseError =>
  new GramfuseError(ErrorCode.HfUnsupported, `${path}: ${what} ${found} is not supported; ${next}`, { facts: { path, found } });

/** The architecture named by a config.json's `architectures[0]`, checked against the supported list. */
export function configArchitecture(raw: unknown, path: string): SupportedArchitecture {
  const architectures = (raw as { architectures?: unknown } | null)?.architectures;
  const first: unknown = Array.isArray(architectures) ? (architectures as unknown[])[0] : undefined;
  if (typeof first !== 'string')
    throw new GramfuseError(
      ErrorCode.HfUnsupported,
      `${path}: config.json has no "architectures" list; gramfuse builds ${SUPPORTED_ARCHITECTURES.join(', ')}: save the model with save_pretrained so the config names its class`,
      { facts: { path } },
    );
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(first))
    throw unsupported(
      path,
      'architecture',
      first,
      `gramfuse builds ${SUPPORTED_ARCHITECTURES.join(', ')}; export this model to ONNX (optimum) and pass the .onnx instead`,
    );
  return first as SupportedArchitecture;
}

/** Parses config.json's text (`path` names it in messages) into the builder's configuration. */
export function parseHfConfig(text: string, path: string): HfModelConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `${path}: not JSON (${(error as Error).message}); it must be a transformers config.json`,
      {
        facts: { path },
        cause: error,
      },
    );
  }
  const architecture = configArchitecture(raw, path);
  if (architecture === 'BertForSequenceClassification' || architecture === 'RobertaForSequenceClassification')
    return parseEncoder(raw, path, architecture);
  const parsed = decoderSchema.safeParse(raw);
  if (!parsed.success)
    throw new GramfuseError(ErrorCode.InvalidArgument, `${path}: ${schemaProblems(parsed.error.issues, 8)}`, { facts: { path } });
  const c = parsed.data;
  const modelType = architecture.startsWith('Qwen2') ? 'qwen2' : architecture.startsWith('Mistral') ? 'mistral' : 'llama';
  if (c.hidden_act !== 'silu')
    throw unsupported(path, 'hidden_act', c.hidden_act, `the ${architecture} builder computes SwiGLU with silu, as transformers' default`);
  const heads = c.num_attention_heads;
  const kvHeads = c.num_key_value_heads ?? heads;
  if (heads % kvHeads !== 0)
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `${path}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}; the config is inconsistent`,
      { facts: { path } },
    );
  const headDim = c.head_dim ?? c.hidden_size / heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0)
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `${path}: head width ${headDim} (head_dim, or hidden_size ${c.hidden_size} / num_attention_heads ${heads}) must be an even integer for rotary embeddings`,
      { facts: { path } },
    );
  const rope = c.rope_parameters ?? c.rope_scaling ?? undefined;
  const ropeTheta = c.rope_theta ?? rope?.rope_theta ?? 10000;
  const ropeType = rope?.rope_type ?? rope?.type ?? 'default';
  let ropeScaling: RopeScaling;
  if (ropeType === 'default') ropeScaling = { type: 'default' };
  else if (ropeType === 'llama3') {
    if (
      rope?.factor === undefined ||
      rope.low_freq_factor === undefined ||
      rope.high_freq_factor === undefined ||
      rope.original_max_position_embeddings === undefined
    )
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        `${path}: rope_scaling of type llama3 needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings`,
        { facts: { path } },
      );
    ropeScaling = {
      type: 'llama3',
      factor: rope.factor,
      lowFreqFactor: rope.low_freq_factor,
      highFreqFactor: rope.high_freq_factor,
      originalMaxPositions: rope.original_max_position_embeddings,
    };
  } else throw unsupported(path, 'rope_scaling type', ropeType, 'gramfuse builds rotary embeddings of type default and llama3');
  const head = architecture.endsWith('ForCausalLM') ? 'causal-lm' : 'sequence-classification';
  const labels = c.num_labels ?? (c.id2label === undefined ? 2 : Object.keys(c.id2label).length);
  const labelNames = Array.from({ length: labels }, (_, i) => c.id2label?.[String(i)]);
  const pad = Array.isArray(c.pad_token_id) ? c.pad_token_id[0] : c.pad_token_id;
  const slidingWindow =
    modelType === 'mistral'
      ? (c.sliding_window ?? undefined)
      : modelType === 'qwen2' && c.use_sliding_window === true
        ? (c.sliding_window ?? undefined)
        : undefined;
  return {
    family: 'decoder',
    architecture,
    modelType,
    head,
    vocab: c.vocab_size,
    hidden: c.hidden_size,
    intermediate: c.intermediate_size,
    layers: c.num_hidden_layers,
    heads,
    kvHeads,
    headDim,
    rmsNormEps: c.rms_norm_eps,
    ropeTheta,
    ropeScaling,
    qkvBias: modelType === 'qwen2' || c.attention_bias,
    oBias: modelType === 'llama' && c.attention_bias,
    mlpBias: modelType === 'llama' && c.mlp_bias,
    // transformers' Llama, Mistral and Qwen2 configs default to untied (PretrainedConfig's own default is tied).
    tiedEmbeddings: c.tie_word_embeddings ?? false,
    slidingWindow,
    padTokenId: pad ?? undefined,
    labels,
    labelNames: labelNames.every((n) => n !== undefined) ? labelNames : undefined,
    torchDtype: c.torch_dtype ?? c.dtype ?? undefined,
  };
}

/**
 * Llama 3.1's rotary inverse frequencies (transformers `_compute_llama3_parameters`): wavelengths longer than the
 * original context over `lowFreqFactor` are divided by `factor`, shorter than it over `highFreqFactor` kept, the band
 * between interpolated smoothly. With `default`, θ^(−2i/d) as they are.
 */
export function rotaryInverseFrequencies(headDim: number, theta: number, scaling: RopeScaling): Float64Array {
  const half = headDim / 2;
  const out = new Float64Array(half);
  for (let i = 0; i < half; i++) out[i] = 1 / theta ** ((2 * i) / headDim);
  if (scaling.type === 'default') return out;
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositions } = scaling;
  const lowFreqWavelen = originalMaxPositions / lowFreqFactor;
  const highFreqWavelen = originalMaxPositions / highFreqFactor;
  for (let i = 0; i < half; i++) {
    const f = out[i]!;
    const wavelen = (2 * Math.PI) / f;
    if (wavelen > lowFreqWavelen) out[i] = f / factor;
    else if (wavelen >= highFreqWavelen) {
      const smooth = (originalMaxPositions / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      out[i] = ((1 - smooth) * f) / factor + smooth * f;
    }
  }
  return out;
}
