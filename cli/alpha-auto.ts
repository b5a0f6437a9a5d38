// `gramfuse merge --alpha auto`: every candidate α solved from one set of α-free sums (the one merge pipeline, one
// factorization per Gram group per candidate), each candidate scored on every owner's validation data, the best
// example-weighted mean chosen (issue #43).
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { evaluateEach, runEvaluation } from '../agent/index.js';
import { ErrorCode, fileError, GramfuseError } from '../shared/index.js';
import type { SpdSolver } from '../shared/linalg/index.js';
import {
  type AlphaCandidate,
  type AlphaSelection,
  mergedMetadata,
  type MergeSpec,
  runMergePipeline,
  type StatisticSource,
} from '../shared/merge/index.js';
import { indexGraph, type ModelAnalysis, modelTask, type OnnxModel } from '../shared/onnx/index.js';

/** Each owner's held-out data for α-auto and how it is read (as `gramfuse eval` reads it). */
export interface AlphaValidationOptions {
  /** One file per model, in --model order. */
  readonly data: readonly string[];
  /** JSON list of labels in logit order. @default the model's labels metadata */
  readonly labels?: string;
  /** @default 'label' */
  readonly labelField?: string;
  /** A seeded random subset per file. @default every example */
  readonly maxExamples?: number;
  /** @default 64 (classifiers), 16 (causal LMs) */
  readonly batchSize?: number;
}

export interface AlphaCandidatesInput {
  readonly source: StatisticSource;
  readonly analysis: ModelAnalysis;
  /** The α-free spec (alphaCandidates set): its candidates, in the order ties are broken. */
  readonly spec: MergeSpec;
  readonly template: OnnxModel;
  readonly templatePath: string;
  /** Owner names in --model order, beside `validation.data`. */
  readonly owners: readonly string[];
  readonly validation: AlphaValidationOptions;
  /** Scratch for the candidates' work directories (and models when `candidatesDir` is not given). */
  readonly scratch: string;
  readonly candidatesDir?: string;
  readonly tokenizer: string;
  readonly seed: number;
  readonly maxLength: number;
  readonly textField: string;
  readonly threads?: number;
  readonly createSolver: () => Promise<SpdSolver>;
  readonly onCandidate?: (done: number, total: number) => void;
}

/** Solves, writes and scores every candidate; returns the selection (the chosen α is `chosen`). */
export async function scoreAlphaCandidates(input: AlphaCandidatesInput): Promise<AlphaSelection> {
  const grid = input.spec.alphaCandidates;
  if (grid === undefined) throw new GramfuseError(ErrorCode.Internal, 'α-auto without candidates');
  const dir = input.candidatesDir ?? join(input.scratch, 'candidates');
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    throw fileError(error, dir, 'creating the directory for the alpha candidates');
  }
  const solved: { alpha: number; path: string; sha256: string; solveSeconds: number }[] = [];
  const solveStarted = performance.now();
  for (const [i, alpha] of grid.entries()) {
    const path = join(dir, `alpha-${alpha}.onnx`);
    const outcome = await runMergePipeline({
      source: input.source,
      analysis: input.analysis,
      spec: input.spec,
      alpha,
      templatePath: input.templatePath,
      workDir: join(input.scratch, 'candidate-work', String(i)),
      modelPath: path,
      safetensorsPath: join(dir, `alpha-${alpha}.safetensors`),
      metadata: mergedMetadata(input.spec, input.analysis.fingerprint),
      createSolver: input.createSolver,
    });
    solved.push({ alpha, path, sha256: outcome.model.sha256, solveSeconds: outcome.seconds.solve });
    input.onCandidate?.(i + 1, grid.length);
  }
  const solveSeconds = (performance.now() - solveStarted) / 1000;

  const evaluateStarted = performance.now();
  const causal = modelTask(indexGraph(input.template.proto.graph!)).kind === 'causal-lm';
  const paths = solved.map((c) => c.path);
  const read = (data: string) => ({
    data,
    tokenizer: input.tokenizer,
    seed: input.seed,
    maxLength: input.maxLength,
    textField: input.textField,
    ...(input.validation.maxExamples === undefined ? {} : { maxExamples: input.validation.maxExamples }),
    ...(input.validation.batchSize === undefined ? {} : { batchSize: input.validation.batchSize }),
    ...(input.threads === undefined ? {} : { threads: input.threads }),
  });
  // values[o][c]: owner o's metric of candidate c, on `examples[o]` examples.
  const values: number[][] = [];
  const examples: number[] = [];
  for (const data of input.validation.data) {
    if (causal) {
      const row: number[] = [];
      let count = 0;
      for (const path of paths) {
        const r = await runEvaluation({ models: [path], ...read(data) });
        if (!('task' in r)) throw new GramfuseError(ErrorCode.Internal, `${path}: expected a causal LM's metrics`);
        row.push(r.perplexity);
        count = r.examples;
      }
      values.push(row);
      examples.push(count);
    } else {
      const results = await evaluateEach(paths, {
        ...read(data),
        ...(input.validation.labels === undefined ? {} : { labels: input.validation.labels }),
        ...(input.validation.labelField === undefined ? {} : { labelField: input.validation.labelField }),
      });
      values.push(results.map((r) => r.accuracy));
      examples.push(results[0]!.examples);
    }
  }
  const total = examples.reduce((a, b) => a + b, 0);
  if (total === 0)
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      '--validation-data: the validation files hold no examples to score the candidates on',
      {
        facts: { flag: 'validation-data' },
      },
    );
  const candidates: AlphaCandidate[] = solved.map((c, k) => ({
    alpha: c.alpha,
    score: values.reduce((sum, row, o) => sum + examples[o]! * row[k]!, 0) / total,
    owners: input.owners.map((name, o) => ({ name, data: input.validation.data[o]!, examples: examples[o]!, value: values[o]![k]! })),
    solveSeconds: c.solveSeconds,
    modelSha256: c.sha256,
    model: input.candidatesDir === undefined ? null : c.path,
  }));
  let best = candidates[0]!;
  for (const c of candidates) if (causal ? c.score < best.score : c.score > best.score) best = c;
  if (input.candidatesDir === undefined) await rm(dir, { recursive: true, force: true });
  return {
    metric: causal ? 'perplexity' : 'accuracy',
    better: causal ? 'lower' : 'higher',
    chosen: best.alpha,
    candidates,
    seconds: { solve: solveSeconds, evaluate: (performance.now() - evaluateStarted) / 1000 },
    note: "the written model is the plain merge at the chosen alpha (each owner's G̃ and G̃B at that alpha rebuilt from its α-free statistics), byte-identical to `gramfuse merge --alpha <chosen>` on the same data; the evaluated candidate was solved from the α-free sums and differs from it only by float64 rounding",
  };
}
