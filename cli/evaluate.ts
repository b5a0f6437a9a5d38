import { readFile } from 'node:fs/promises';

import { classificationMetrics, collectExamples, loadTokenizer, predictLogits, type Progress } from '../agent/index.js';
import { ErrorCode, fileError, GramfuseError, loadModel, modelInputs, indexGraph, type OnnxModel } from '../shared/index.js';

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

/** `gramfuse eval`: accuracy and macro-F1 of a model (or an ensemble) on labelled data. */
export async function runEvaluation(options: EvaluateOptions): Promise<EvaluationResult> {
  if (options.models.length === 0)
    throw new GramfuseError(ErrorCode.InvalidArgument, '--model: give a model to evaluate', { facts: { flag: 'model' } });
  if (options.models.length > 1 && options.ensemble !== true) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `--model given ${options.models.length} times; add --ensemble to evaluate their logit average, or evaluate one model at a time`,
      {
        facts: { flag: 'model' },
      },
    );
  }
  const models = await Promise.all(options.models.map((p) => loadModel(p)));
  const labels = await labelList(models[0]!, options.labels);
  const tokenizer = await loadTokenizer(options.tokenizer, options.maxLength === undefined ? {} : { maxLength: options.maxLength });
  const examples = await collectExamples(options.data, {
    requireLabel: true,
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
        {
          facts: { path: options.data, line: e.line, label: e.label ?? null },
        },
      );
    }
    return label;
  });
  const { logits, classes } = await predictLogits(
    models.map((model) => ({ model, analysis: { inputs: modelInputs(indexGraph(model.proto.graph!)) } })),
    tokenizer,
    examples,
    {
      batchSize: options.batchSize ?? 64,
      ...(options.threads === undefined ? {} : { intraOpThreads: options.threads }),
      ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
    },
  );
  if (classes !== labels.length) {
    throw new GramfuseError(ErrorCode.InvalidArgument, `--labels: ${labels.length} labels, but the model outputs ${classes} logits`, {
      facts: { labels: labels.length, logits: classes },
    });
  }
  return classificationMetrics(logits, classes, truth);
}
