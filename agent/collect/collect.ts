import { mirrorUpper } from '../../shared/linalg/index.js';
import { type GramStatistics } from '../../shared/merge/index.js';
import {
  createSession,
  instrumentGrams,
  type GramGroup,
  type ModelAnalysis,
  type OnnxModel,
  OrtTensor,
  runSession,
  type SessionOptions,
  type Tensor,
} from '../../shared/onnx/index.js';
import { buildFeeds, inputRoles } from './batches.js';
import type { Example } from './data-reader.js';
import { encodeExample, type TextTokenizer, type TokenizedExample } from './tokenizer.js';

export interface BatchOptions {
  /** Examples per batch. Default 32. */
  readonly batchSize?: number;
}

export interface Progress {
  readonly examples: number;
  readonly total: number;
  readonly tokens: number;
}

export interface CollectOptions extends BatchOptions, SessionOptions {
  /** Count padding tokens in Grams (the reference code's behaviour). Default false. */
  readonly includePadding?: boolean;
  /** The Gram groups to collect (one pass of a budgeted collection). @default every group of the analysis */
  readonly groups?: readonly GramGroup[];
  readonly onProgress?: (progress: Progress) => void;
  /** Filled in with where collection's time went (bench/collect reads it to break its overhead down). */
  readonly timings?: CollectTimings;
}

/** Milliseconds per phase of one collection, added to as it goes. */
export interface CollectTimings {
  /** Instrumenting the graph and creating its session (released at the end: counted here too). */
  session: number;
  /** Tokenizing, length-bucketing and building each batch's input tensors. */
  inputs: number;
  /** onnxruntime running the instrumented graph (the model up to its last Gram input, masks, Gram bands). */
  run: number;
  /** Adding each batch's float32 bands into the float64 accumulators. */
  accumulate: number;
  /** Mirroring each accumulated upper triangle into the lower one. */
  mirror: number;
}

/**
 * Tokenized examples grouped into batches of similar length, so little compute goes to padding. Each
 * batch keeps the indices of its examples in the input order.
 */
export function lengthBatches(encoded: readonly TokenizedExample[], batchSize: number): number[][] {
  const order = encoded.map((_, i) => i).sort((a, b) => encoded[a]!.ids.length - encoded[b]!.ids.length || a - b);
  const batches: number[][] = [];
  for (let i = 0; i < order.length; i += batchSize) batches.push(order.slice(i, i + batchSize));
  return batches;
}

/** Examples tokenized and run per chunk, so memory holds one chunk of text, not the whole file. */
const CHUNK_BATCHES = 32;

/**
 * Runs the instrumented model over all examples and accumulates each Gram group's G = Σ xxᵀ and row
 * count in float64. Padding rows never enter a Gram unless `includePadding`. Examples may stream in
 * (an async iterable): they are tokenized and length-bucketed one chunk at a time.
 */
export async function collectGramStatistics(
  model: OnnxModel,
  analysis: ModelAnalysis,
  tokenizer: TextTokenizer,
  examples: AsyncIterable<Example> | Iterable<Example>,
  options: CollectOptions & { readonly total?: number } = {},
): Promise<GramStatistics> {
  const selected = options.groups ?? analysis.gramGroups;
  const timings = options.timings;
  let clock = performance.now();
  /** Adds the time since the last call to `phase` (when timings are asked for). */
  const lap = (phase: keyof CollectTimings): void => {
    if (timings === undefined) return;
    const now = performance.now();
    timings[phase] += now - clock;
    clock = now;
  };
  // Only the Gram outputs are computed: nothing after the last Gram input (a causal LM's logits) runs.
  const instrumented = instrumentGrams(model, selected, analysis.rowRules, {
    includePadding: options.includePadding ?? false,
    gramOutputsOnly: true,
  });
  const session = await createSession(instrumented.model, options);
  lap('session');
  const roles = inputRoles(analysis.inputs);
  const batchSize = options.batchSize ?? 32;
  const accumulators = new Map(selected.map((g) => [g.id, { gram: new Float64Array(g.inDim * g.inDim), rows: 0, n: g.inDim }]));
  // onnxruntime writes each batch's Grams (the row bands of their upper block triangles) into these buffers, reused,
  // instead of new output buffers per batch that the garbage collector frees when it gets to them.
  const fetches: Record<string, Tensor> = {};
  for (const names of instrumented.outputs) {
    for (const { output, firstRow, height } of names.blocks) {
      const width = names.n - firstRow;
      fetches[output] = new OrtTensor('float32', new Float32Array(height * width), [height, width]);
    }
    fetches[names.rows] = new OrtTensor('int64', new BigInt64Array(1), []);
  }
  lap('accumulate');
  let tokens = 0;
  let done = 0;
  const runChunk = async (chunk: Example[]): Promise<void> => {
    lap('inputs');
    const encoded = chunk.map((e) => encodeExample(tokenizer, e));
    for (const batch of lengthBatches(encoded, batchSize)) {
      const items = batch.map((i) => encoded[i]!);
      const feeds = buildFeeds(items, analysis.inputs, roles, tokenizer.padId);
      lap('inputs');
      await runSession(session, feeds, `${model.source} (statistics)`, fetches);
      lap('run');
      const out = fetches;
      for (const names of instrumented.outputs) {
        const acc = accumulators.get(names.group)!;
        const g = acc.gram;
        const n = acc.n;
        // The upper triangle only (a Gram is symmetric): half the float64 additions; mirrored once at the end. Band
        // row r holds row firstRow + r of the Gram from column firstRow on.
        for (const { output, firstRow, height } of names.blocks) {
          const band = out[output]!.data as Float32Array;
          const width = n - firstRow;
          for (let r = 0; r < height; r++) addInto(g, (firstRow + r) * (n + 1), band, r * width + r, (r + 1) * width);
        }
        acc.rows += Number((out[names.rows]!.data as BigInt64Array)[0]);
      }
      for (const item of items) tokens += item.ids.length;
      done += items.length;
      lap('accumulate');
      options.onProgress?.({ examples: done, total: options.total ?? done, tokens });
      lap('inputs');
    }
  };
  try {
    let chunk: Example[] = [];
    for await (const example of examples) {
      chunk.push(example);
      if (chunk.length >= batchSize * CHUNK_BATCHES) {
        await runChunk(chunk);
        chunk = [];
      }
    }
    if (chunk.length > 0) await runChunk(chunk);
  } finally {
    lap('inputs');
    await session.release();
    lap('session');
  }
  const groups = new Map<string, { gram: Float64Array; rows: number }>();
  for (const [id, { gram, rows, n }] of accumulators) {
    mirrorUpper(gram, n);
    groups.set(id, { gram, rows });
  }
  lap('mirror');
  return { fingerprint: analysis.fingerprint, groups, examples: done, tokens };
}

/**
 * to[at …] += from[begin … end) in float64. A function of its own, called for each row: V8 keeps it monomorphic and
 * its loop simple (1.15 ns per addition measured alone on these cores, against 1.8 for the same loop inlined with
 * its index arithmetic).
 */
function addInto(to: Float64Array, at: number, from: Float32Array, begin: number, end: number): void {
  for (; begin < end; begin++, at++) to[at] = to[at]! + from[begin]!;
}

/** Logits of the model for every example, in input order ([examples × classes]). */
export async function predictLogits(
  models: readonly { model: OnnxModel; analysis: Pick<ModelAnalysis, 'inputs'> }[],
  tokenizer: TextTokenizer,
  examples: readonly Example[],
  options: BatchOptions & SessionOptions & { readonly onProgress?: (progress: Progress) => void } = {},
): Promise<{ logits: Float64Array; classes: number }> {
  // Several models: the ensemble's logit average.
  const encoded = examples.map((e) => encodeExample(tokenizer, e));
  const batches = lengthBatches(encoded, options.batchSize ?? 64);
  let logits: Float64Array | undefined;
  let classes = 0;
  let done = 0;
  for (const { model, analysis } of models) {
    const session = await createSession(model, options);
    const roles = inputRoles(analysis.inputs);
    const outputName = session.outputNames[0]!;
    try {
      for (const batch of batches) {
        const items = batch.map((i) => encoded[i]!);
        const out = await runSession(session, buildFeeds(items, analysis.inputs, roles, tokenizer.padId), `${model.source} (evaluation)`);
        const values = out[outputName]!.data as Float32Array;
        classes = values.length / items.length;
        logits ??= new Float64Array(examples.length * classes);
        batch.forEach((index, row) => {
          for (let c = 0; c < classes; c++)
            logits![index * classes + c] = logits![index * classes + c]! + values[row * classes + c]! / models.length;
        });
        done += items.length;
        options.onProgress?.({ examples: done, total: examples.length * models.length, tokens: 0 });
      }
    } finally {
      await session.release();
    }
  }
  return { logits: logits ?? new Float64Array(0), classes };
}

/** Accuracy and macro-averaged F1 (over the labels that occur in truth or predictions). */
export function classificationMetrics(
  logits: Float64Array,
  classes: number,
  truth: readonly number[],
): { examples: number; accuracy: number; macroF1: number } {
  const tp = new Float64Array(classes);
  const fp = new Float64Array(classes);
  const fn = new Float64Array(classes);
  let correct = 0;
  truth.forEach((label, i) => {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[i * classes + c]! > logits[i * classes + best]!) best = c;
    if (best === label) {
      correct++;
      tp[label]!++;
    } else {
      fp[best]!++;
      fn[label]!++;
    }
  });
  let f1Sum = 0;
  let present = 0;
  for (let c = 0; c < classes; c++) {
    if (tp[c]! + fp[c]! + fn[c]! === 0) continue;
    present++;
    f1Sum += (2 * tp[c]!) / (2 * tp[c]! + fp[c]! + fn[c]!);
  }
  return {
    examples: truth.length,
    accuracy: truth.length === 0 ? 0 : correct / truth.length,
    macroF1: present === 0 ? 0 : f1Sum / present,
  };
}
