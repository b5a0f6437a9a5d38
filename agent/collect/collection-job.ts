import { ErrorCode, GramfuseError } from '../../shared/index.js';
import type { DisclosurePlan, GramStatistics, MergeSpec } from '../../shared/merge/index.js';
import {
  analyzeModel,
  type DeviceChoice,
  fingerprint,
  loadModel,
  type ModelAnalysis,
  type OnnxModel,
  resolveDevice,
  serializeModel,
  withWeightsOnDisk,
} from '../../shared/onnx/index.js';
import { collectGramStatistics, type Progress } from './collect.js';
import { collectExamples, readExamples } from './data-reader.js';
import { type CollectionPass, defaultMemoryBudget, planPasses } from './passes.js';
import { writeStatistics } from './statistics-writer.js';
import { loadTokenizer } from './tokenizer.js';

/** Everything the agent's worker needs to turn a model and private data into a contribution. */
export interface CollectionRequest {
  readonly owner: string;
  readonly modelPath: string;
  readonly dataPath: string;
  readonly tokenizerPath: string;
  readonly spec: MergeSpec;
  readonly maxLength: number;
  readonly batchSize: number;
  readonly maxExamples?: number;
  readonly seed: number;
  readonly textField: string;
  readonly textPairField?: string;
  readonly device: 'auto' | 'cpu' | 'cuda';
  readonly threads?: number;
  /**
   * The model's analysis when the caller already has it (the agent's plan, the local merge's template):
   * the worker then skips the probe run, after checking the model's fingerprint against it.
   */
  readonly analysis?: ModelAnalysis;
  /** Usable examples in the data file when the caller already counted them (saves a pass over the file). */
  readonly examples?: number;
  /** The disclosure plan whose statistics are written (ids, order, dtypes). */
  readonly plan: DisclosurePlan;
  /** Where statistics.safetensors is written (atomically). */
  readonly statisticsPath: string;
  /** Bytes one pass's accumulators may take. @default defaultMemoryBudget() (half of the free memory) */
  readonly memoryBudget?: number;
}

export interface CollectionResult {
  readonly statistics: Pick<GramStatistics, 'examples' | 'tokens'> & { readonly rows: Record<string, number> };
  /** SHA-256 (hex) per statistic of statistics.safetensors as written. */
  readonly sha256: Readonly<Record<string, string>>;
  /** The passes over the data (none for methods without Grams). */
  readonly passes: readonly CollectionPass[];
  /** The memory budget the passes were planned for (bytes of one pass's accumulators). */
  readonly memoryBudget: number;
  /** Bytes of the model's parameters (what one copy of the weights takes). */
  readonly modelBytes: number;
  /** The process's peak resident set size when the collection ended (getrusage), bytes. */
  readonly peakRssBytes: number;
  readonly device: DeviceChoice;
  readonly seconds: number;
}

/** Loads and analyses a model (the probe run is inference too, so it runs where the sessions run). */
export async function analyzeRequest(modelPath: string): Promise<ModelAnalysis> {
  return analyzeModel(await loadModel(modelPath));
}

/**
 * The agent's collection job: device choice, tokenizer, streamed data (or a seeded subset), Gram collection in
 * passes that fit the memory budget, and the plan's statistics written to `statisticsPath` as they are
 * computed. Runs inside the worker thread.
 */
export async function runCollectionJob(request: CollectionRequest, onProgress: (progress: Progress) => void): Promise<CollectionResult> {
  const started = performance.now();
  const { model, analysis, dispose } = await loadForCollection(request);
  try {
    return await collect(request, model, analysis, started, onProgress);
  } finally {
    await dispose();
  }
}

/**
 * The model checked against the analysed one, with its weights held once: an inline model's tensors go to a private
 * side file that onnxruntime reads itself (the decoded file is dropped when this returns).
 */
async function loadForCollection(
  request: CollectionRequest,
): Promise<{ model: OnnxModel; analysis: ModelAnalysis; dispose: () => Promise<void> }> {
  const loaded = await loadModel(request.modelPath);
  const analysis = request.analysis ?? (await analyzeModel(loaded));
  if (request.analysis !== undefined && fingerprint(loaded) !== request.analysis.fingerprint) {
    throw new GramfuseError(
      ErrorCode.FingerprintMismatch,
      `${request.modelPath}: fingerprint ${fingerprint(loaded)} is not the analysed model's ${request.analysis.fingerprint}; the model file changed during the job`,
      { facts: { model: request.modelPath } },
    );
  }
  const weights = await withWeightsOnDisk(loaded);
  return { model: weights.model, analysis, dispose: weights.dispose };
}

async function collect(
  request: CollectionRequest,
  model: OnnxModel,
  analysis: ModelAnalysis,
  started: number,
  onProgress: (progress: Progress) => void,
): Promise<CollectionResult> {
  const regmean = request.spec.method === 'regmean';
  const memoryBudget = request.memoryBudget ?? defaultMemoryBudget();
  const passes = regmean ? planPasses(analysis.gramGroups, memoryBudget) : [];
  const device = regmean
    ? await resolveDevice(request.device, () => serializeModel(model))
    : { device: 'cpu' as const, reason: 'no inference: the method needs no statistics of the data' };
  const tokenizer = regmean ? await loadTokenizer(request.tokenizerPath, { maxLength: request.maxLength }) : undefined;
  const fields = {
    textField: request.textField,
    ...(request.textPairField === undefined ? {} : { textPairField: request.textPairField }),
    ...(tokenizer === undefined ? {} : { chatTemplate: tokenizer.chatTemplate }),
  };
  // A subset needs the whole file seen once (reservoir) and is kept for every pass; otherwise each pass streams it.
  const subset =
    regmean && request.maxExamples !== undefined
      ? await collectExamples(request.dataPath, { ...fields, maxExamples: request.maxExamples, seed: request.seed })
      : undefined;
  let total = subset?.length ?? request.examples;
  if (regmean && total === undefined) {
    let count = 0;
    for await (const _ of readExamples(request.dataPath, fields)) count++;
    total = count;
  }
  let pass = 0;
  const written = await writeStatistics(request.statisticsPath, request.plan, model, analysis, request.spec, passes, async (groups) => {
    const before = pass * (total ?? 0);
    const statistics = await collectGramStatistics(model, analysis, tokenizer!, subset ?? readExamples(request.dataPath, fields), {
      includePadding: request.spec.includePadding,
      batchSize: request.batchSize,
      device: device.device,
      groups,
      ...(total === undefined ? {} : { total }),
      ...(request.threads === undefined ? {} : { intraOpThreads: request.threads }),
      // Progress counts examples over all passes: a 3-pass collection of 10 000 rows runs to 30 000.
      onProgress: (p) => onProgress({ ...p, examples: before + p.examples, total: passes.length * (total ?? p.total) }),
    });
    pass++;
    if (statistics.examples === 0) {
      throw new GramfuseError(ErrorCode.InvalidData, `${request.dataPath}: no usable examples`, { facts: { path: request.dataPath } });
    }
    return statistics;
  });
  return {
    statistics: { examples: written.examples, tokens: written.tokens, rows: { ...written.rows } },
    sha256: written.sha256,
    passes,
    memoryBudget,
    modelBytes: analysis.parameters.reduce((sum, p) => sum + p.bytes, 0),
    peakRssBytes: process.resourceUsage().maxRSS * 1024,
    device,
    seconds: (performance.now() - started) / 1000,
  };
}
