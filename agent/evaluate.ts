import { readFile } from 'node:fs/promises';

import { ErrorCode, fileError, GramfuseError } from '../shared/index.js';
import { loadModel, modelInputs, indexGraph, modelTask, type OnnxModel } from '../shared/onnx/index.js';
import { classificationMetrics, predictLogits, type Progress } from './collect/index.js';
import { type LanguageModelMetrics, languageModelMetrics } from './collect/index.js';
import { collectExamples, type Example } from './collect/index.js';
import { type ChatTemplate, loadTokenizer } from './collect/index.js';

export interface EvaluateOptions {
  /** One model, or several for `ensemble` (their logits are averaged). */
  readonly models: readonly string[];
  readonly data: string;
  readonly tokenizer: string;
  /** A JSON list of label names in logit order; default: the model's `labels` or `fixture_labels` metadata. */
  readonly labels?: string;
  readonly ensemble?: boolean;
  readonly maxExamples?: number;
  readonly seed?: number;
  readonly batchSize?: number;
  readonly maxLength?: number;
  readonly textField?: string;
  readonly labelField?: string;
  readonly threads?: number;
  readonly onProgress?: (progress: Progress) => void;
}

export interface EvaluationResult {
  readonly examples: number;
  readonly accuracy: number;
  readonly macroF1: number;
}

async function labelList(model: OnnxModel, path: string | undefined): Promise<string[]> {
  let text: string | undefined;
  let source: string;
  if (path !== undefined) {
    source = path;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      throw fileError(error, path, 'reading the label list');
    }
  } else {
    source = `${model.source} metadata`;
    text = model.proto.metadataProps.find((p) => p.key === 'labels' || p.key === 'fixture_labels')?.value;
    if (text === undefined) {
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        `--labels: ${model.source} has no "labels" metadata; pass a JSON list of label names in logit order`,
        { facts: { flag: 'labels' } },
      );
    }
  }
  let labels: unknown;
  try {
    labels = JSON.parse(text);
  } catch (error) {
    throw new GramfuseError(ErrorCode.InvalidData, `${source}: the label list is not valid JSON (${(error as Error).message})`, {
      facts: { path: source },
      cause: error,
    });
  }
  if (!Array.isArray(labels) || labels.length === 0 || !labels.every((l) => typeof l === 'string')) {
    throw new GramfuseError(ErrorCode.InvalidData, `${source}: expected a non-empty JSON list of label names`, { facts: { path: source } });
  }
  return labels;
}

/** The number of logits a classifier's first output declares, when that dimension is static. */
function declaredClasses(model: OnnxModel): number | undefined {
  const dims = model.proto.graph?.output[0]?.type?.tensorType?.shape?.dim ?? [];
  const last = dims[dims.length - 1];
  const value = last?.dimValue === undefined ? undefined : Number(last.dimValue);
  return value !== undefined && value > 0 && dims.length === 2 ? value : undefined;
}

function checkLabelCount(labels: readonly string[], classes: number, source: string): void {
  if (classes !== labels.length) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `--labels: the label list has ${labels.length} labels, but ${source} outputs ${classes} logits; give the model's own label list (one name per logit, in logit order)`,
      { facts: { flag: 'labels', labels: labels.length, logits: classes } },
    );
  }
}

/** Labelled examples of a data file, with each label's index in the label list. */
async function labelledExamples(
  options: EvaluateOptions,
  labels: readonly string[],
  chatTemplate: ChatTemplate,
): Promise<{ examples: Example[]; truth: number[] }> {
  const examples = await collectExamples(options.data, {
    requireLabel: true,
    chatTemplate,
    ...(options.textField === undefined ? {} : { textField: options.textField }),
    ...(options.labelField === undefined ? {} : { labelField: options.labelField }),
    ...(options.maxExamples === undefined ? {} : { maxExamples: options.maxExamples }),
    seed: options.seed ?? 1,
  });
  const index = new Map(labels.map((l, i) => [l, i]));
  const truth = examples.map((e) => {
    const label = index.get(e.label!);
    if (label === undefined) {
      throw new GramfuseError(
        ErrorCode.InvalidData,
        `${options.data}:${e.line}: label "${e.label}" is not in the label list (${labels.join(', ')})`,
        { facts: { path: options.data, line: e.line, label: e.label ?? null } },
      );
    }
    return label;
  });
  return { examples, truth };
}

/** What `gramfuse eval` reports for a causal LM. */
export interface LanguageModelEvaluation extends LanguageModelMetrics {
  readonly task: 'causal-lm';
}

/**
 * `gramfuse eval`: accuracy and macro-F1 of a classifier (or an ensemble) on labelled data; perplexity and next-token
 * accuracy of a causal LM on held-out text (labels are not read).
 */
export async function runEvaluation(options: EvaluateOptions): Promise<EvaluationResult | LanguageModelEvaluation> {
  if (options.models.length === 0)
    throw new GramfuseError(ErrorCode.InvalidArgument, '--model: give a model to evaluate', { facts: { flag: 'model' } });
  if (options.models.length > 1 && options.ensemble !== true) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `--model given ${options.models.length} times; add --ensemble to evaluate their logit average, or evaluate one model at a time`,
      { facts: { flag: 'model' } },
    );
  }
  const first = await loadModel(options.models[0]!);
  const index = indexGraph(first.proto.graph!);
  const task = modelTask(index);
  if (task.kind === 'causal-lm') {
    if (options.ensemble === true)
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        '--ensemble: gramfuse averages classifier logits only; evaluate a causal LM alone',
        {
          facts: { flag: 'ensemble' },
        },
      );
    const tokenizer = await loadTokenizer(options.tokenizer, options.maxLength === undefined ? {} : { maxLength: options.maxLength });
    const examples = await collectExamples(options.data, {
      requireLabel: false,
      chatTemplate: tokenizer.chatTemplate,
      ...(options.textField === undefined ? {} : { textField: options.textField }),
      ...(options.maxExamples === undefined ? {} : { maxExamples: options.maxExamples }),
      seed: options.seed ?? 1,
    });
    const metrics = await languageModelMetrics(first, { inputs: modelInputs(index), task }, tokenizer, examples, {
      batchSize: options.batchSize ?? 16,
      ...(options.threads === undefined ? {} : { intraOpThreads: options.threads }),
      ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
    });
    return { task: 'causal-lm', ...metrics };
  }
  const [result] = await evaluateEach(options.models, { ...options, ensembleOf: options.ensemble === true ? options.models : [] });
  return options.ensemble === true ? result!.ensemble! : result!;
}

export interface EvaluateEachResult extends EvaluationResult {
  readonly model: string;
  /** Only on the first result, when `ensembleOf` was given: the metrics of those models' logit average. */
  readonly ensemble?: EvaluationResult;
}

/**
 * Evaluates several models one after the other on the same labelled data (read and tokenized once); with
 * `ensembleOf`, also the logit average of those models, from the logits already computed.
 */
export async function evaluateEach(
  paths: readonly string[],
  options: Omit<EvaluateOptions, 'models' | 'ensemble'> & { readonly ensembleOf?: readonly string[] },
): Promise<EvaluateEachResult[]> {
  const models = await Promise.all(paths.map((p) => loadModel(p)));
  for (const model of models) {
    if (modelTask(indexGraph(model.proto.graph!)).kind === 'causal-lm')
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        `${model.source} is a causal LM: this evaluation reports classifier metrics (accuracy, macro-F1); score it with \`gramfuse eval --model ${model.source}\` (perplexity, token accuracy)`,
        { facts: { model: model.source } },
      );
  }
  const labels = await labelList(models[0]!, options.labels);
  for (const model of models) {
    const declared = declaredClasses(model);
    if (declared !== undefined) checkLabelCount(labels, declared, model.source);
  }
  const tokenizer = await loadTokenizer(options.tokenizer, options.maxLength === undefined ? {} : { maxLength: options.maxLength });
  const { examples, truth } = await labelledExamples({ ...options, models: paths }, labels, tokenizer.chatTemplate);
  const results: EvaluateEachResult[] = [];
  const ensembleOf = new Set(options.ensembleOf ?? []);
  let sum: Float64Array | undefined;
  let done = 0;
  for (const [i, model] of models.entries()) {
    const { logits, classes } = await predictLogits(
      [{ model, analysis: { inputs: modelInputs(indexGraph(model.proto.graph!)) } }],
      tokenizer,
      examples,
      {
        batchSize: options.batchSize ?? 64,
        ...(options.threads === undefined ? {} : { intraOpThreads: options.threads }),
        onProgress: (p) => options.onProgress?.({ examples: done + p.examples, total: examples.length * models.length, tokens: 0 }),
      },
    );
    done += examples.length;
    checkLabelCount(labels, classes, model.source);
    results.push({ model: paths[i]!, ...classificationMetrics(logits, classes, truth) });
    if (ensembleOf.has(paths[i]!)) {
      sum ??= new Float64Array(logits.length);
      for (let k = 0; k < logits.length; k++) sum[k] = sum[k]! + logits[k]! / ensembleOf.size;
    }
  }
  if (sum !== undefined) results[0] = { ...results[0]!, ensemble: classificationMetrics(sum, labels.length, truth) };
  return results;
}
