import { ErrorCode, GramfuseError } from '../../shared/index.js';
import { buildContribution, type Contribution, type GramStatistics, type MergeSpec } from '../../shared/merge/index.js';
import {
  analyzeModel,
  type DeviceChoice,
  fingerprint,
  loadModel,
  type ModelAnalysis,
  resolveDevice,
  serializeModel,
} from '../../shared/onnx/index.js';
import { collectGramStatistics, type Progress } from './collect.js';
import { collectExamples, readExamples } from './data-reader.js';
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
}

export interface CollectionResult {
  readonly contribution: Contribution;
  readonly statistics: Pick<GramStatistics, 'examples' | 'tokens'> & { readonly rows: Record<string, number> };
  readonly device: DeviceChoice;
  readonly seconds: number;
}

/** Loads and analyses a model (the probe run is inference too, so it runs where the sessions run). */
export async function analyzeRequest(modelPath: string): Promise<ModelAnalysis> {
  return analyzeModel(await loadModel(modelPath));
}

/**
 * The agent's collection job: device choice, tokenizer, streamed data (or a seeded subset), Gram
 * collection, and the contribution for the job's method. Runs inside the worker thread.
 */
export async function runCollectionJob(request: CollectionRequest, onProgress: (progress: Progress) => void): Promise<CollectionResult> {
  const started = performance.now();
  const model = await loadModel(request.modelPath);
  const analysis = request.analysis ?? (await analyzeModel(model));
  if (request.analysis !== undefined && fingerprint(model) !== request.analysis.fingerprint) {
    throw new GramfuseError(
      ErrorCode.FingerprintMismatch,
      `${request.modelPath}: fingerprint ${fingerprint(model)} is not the analysed model's ${request.analysis.fingerprint}; the model file changed during the job`,
      { facts: { model: request.modelPath } },
    );
  }
  const device = await resolveDevice(request.device, serializeModel(model));
  const tokenizer = await loadTokenizer(request.tokenizerPath, { maxLength: request.maxLength });
  const fields = { textField: request.textField, ...(request.textPairField === undefined ? {} : { textPairField: request.textPairField }) };
  let statistics: GramStatistics | undefined;
  if (request.spec.method === 'regmean') {
    // A subset needs the whole file seen once (reservoir); otherwise stream it in chunks.
    let total: number | undefined;
    let examples: Parameters<typeof collectGramStatistics>[3];
    if (request.maxExamples !== undefined) {
      const subset = await collectExamples(request.dataPath, { ...fields, maxExamples: request.maxExamples, seed: request.seed });
      total = subset.length;
      examples = subset;
    } else {
      total = request.examples;
      if (total === undefined) {
        let count = 0;
        for await (const _ of readExamples(request.dataPath, fields)) count++;
        total = count;
      }
      examples = readExamples(request.dataPath, fields);
    }
    statistics = await collectGramStatistics(model, analysis, tokenizer, examples, {
      includePadding: request.spec.includePadding,
      batchSize: request.batchSize,
      device: device.device,
      total,
      ...(request.threads === undefined ? {} : { intraOpThreads: request.threads }),
      onProgress,
    });
    if (statistics.examples === 0) {
      throw new GramfuseError(ErrorCode.InvalidData, `${request.dataPath}: no usable examples`, { facts: { path: request.dataPath } });
    }
  }
  const contribution = await buildContribution(request.owner, model, analysis, request.spec, statistics);
  return {
    contribution,
    statistics: {
      examples: statistics?.examples ?? 0,
      tokens: statistics?.tokens ?? 0,
      rows: Object.fromEntries([...(statistics?.groups ?? new Map<string, { rows: number }>())].map(([g, s]) => [g, s.rows])),
    },
    device,
    seconds: (performance.now() - started) / 1000,
  };
}
