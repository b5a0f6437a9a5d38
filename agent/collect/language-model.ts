import { decodeFloats, ErrorCode, GramfuseError } from '../../shared/index.js';
import { createSession, type ModelAnalysis, type OnnxModel, runSession, type SessionOptions } from '../../shared/onnx/index.js';
import { buildFeeds, inputRoles } from './batches.js';
import { type BatchOptions, lengthBatches, type Progress } from './collect.js';
import type { Example } from './data-reader.js';
import { encodeExample, type TextTokenizer } from './tokenizer.js';

/** How well a causal LM predicts held-out text, token by token. */
export interface LanguageModelMetrics {
  readonly examples: number;
  /** Predicted tokens: every position whose next position is a real token (padding never counts). */
  readonly tokens: number;
  /** exp(mean negative log-likelihood) over those tokens. */
  readonly perplexity: number;
  /** Mean negative log-likelihood per token, in nats. */
  readonly meanNll: number;
  /** Share of tokens whose most likely next token is the one that follows. */
  readonly tokenAccuracy: number;
}

/**
 * Perplexity and next-token accuracy of a causal LM (`[batch, sequence, vocab]` logits, float32 or float16) on
 * examples: at every position t whose successor t+1 is not padding, −log softmax(logits[t])[ids[t+1]] in float64.
 */
export async function languageModelMetrics(
  model: OnnxModel,
  analysis: Pick<ModelAnalysis, 'inputs' | 'task'>,
  tokenizer: TextTokenizer,
  examples: readonly Example[],
  options: BatchOptions & SessionOptions & { readonly onProgress?: (progress: Progress) => void } = {},
): Promise<LanguageModelMetrics> {
  if (analysis.task.kind !== 'causal-lm')
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `${model.source}: not a causal LM (its first output is not [batch, sequence, vocab])`,
    );
  const vocab = analysis.task.vocab;
  const roles = inputRoles(analysis.inputs);
  const idsName = [...roles].find(([, role]) => role === 'ids')?.[0];
  const maskName = [...roles].find(([, role]) => role === 'mask')?.[0];
  if (idsName === undefined)
    throw new GramfuseError(ErrorCode.OnnxUnsupportedGraph, `${model.source}: a causal LM needs an input_ids input to score`);
  const encoded = examples.map((e) => encodeExample(tokenizer, e));
  const session = await createSession(model, options);
  let nll = 0;
  let tokens = 0;
  let correct = 0;
  let done = 0;
  try {
    for (const batch of lengthBatches(encoded, options.batchSize ?? 16)) {
      const items = batch.map((i) => encoded[i]!);
      const feeds = buildFeeds(items, analysis.inputs, roles, tokenizer.padId);
      const out = await runSession(session, feeds, `${model.source} (evaluation)`);
      const logitsTensor = out[analysis.task.output]!;
      const raw = logitsTensor.data as Float32Array | Uint16Array;
      const ids = feeds[idsName]!.data as BigInt64Array;
      const mask = maskName === undefined ? undefined : (feeds[maskName]!.data as BigInt64Array);
      const length = ids.length / items.length;
      const real = (row: number, t: number): boolean => (mask === undefined ? t < items[row]!.ids.length : mask[row * length + t] !== 0n);
      for (let row = 0; row < items.length; row++) {
        for (let t = 0; t + 1 < length; t++) {
          if (!real(row, t) || !real(row, t + 1)) continue;
          const at = (row * length + t) * vocab;
          const logits =
            raw instanceof Uint16Array
              ? decodeFloats(new Uint8Array(raw.buffer, raw.byteOffset + at * 2, vocab * 2), 'float16')
              : raw.subarray(at, at + vocab);
          let max = -Infinity;
          let best = 0;
          for (let v = 0; v < vocab; v++)
            if (logits[v]! > max) {
              max = logits[v]!;
              best = v;
            }
          let sum = 0;
          for (let v = 0; v < vocab; v++) sum += Math.exp(logits[v]! - max);
          const target = Number(ids[row * length + t + 1]!);
          nll += max + Math.log(sum) - logits[target]!;
          if (best === target) correct++;
          tokens++;
        }
      }
      done += items.length;
      options.onProgress?.({ examples: done, total: examples.length, tokens });
    }
  } finally {
    await session.release();
  }
  if (tokens === 0)
    throw new GramfuseError(ErrorCode.InvalidData, `no example has two or more tokens to score`, { facts: { examples: examples.length } });
  const meanNll = nll / tokens;
  if (!Number.isFinite(meanNll))
    throw new GramfuseError(ErrorCode.NonFinite, `${model.source}: the logits are not finite, so no perplexity`, { facts: { tokens } });
  return { examples: examples.length, tokens, perplexity: Math.exp(meanNll), meanNll, tokenAccuracy: correct / tokens };
}
