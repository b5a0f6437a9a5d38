import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { z } from 'zod';

import { ErrorCode, GramfuseError } from '../shared/errors.js';
import { parseByteSize } from '../shared/index.js';
import { address, natsSecurity, tls } from './federation-flags.js';

/**
 * A Hugging Face directory's own tokenizer: `DIR/tokenizer.json` when `model` (a --model value, or the first of
 * several) is a directory holding one.
 */
export function tokenizerBeside(model: unknown): string | undefined {
  const first: unknown = Array.isArray(model) ? (model as unknown[])[0] : model;
  if (typeof first !== 'string') return undefined;
  const path = join(first, 'tokenizer.json');
  return statSync(first, { throwIfNoEntry: false })?.isDirectory() === true && existsSync(path) ? path : undefined;
}

/**
 * Validates commander's options with zod and reports every problem at once, each with its flag. A command with both
 * --model and --tokenizer gets the model directory's tokenizer.json when --tokenizer is not given.
 */
export function parseFlags<T extends z.ZodType>(schema: T, raw: Record<string, unknown>): z.infer<T> {
  if (raw.tokenizer === undefined && raw.model !== undefined) {
    const beside = tokenizerBeside(raw.model);
    if (beside !== undefined) raw = { ...raw, tokenizer: beside };
  }
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const key = String(issue.path[0] ?? '');
    if (key === '') return issue.message; // a rule across flags (one of two, …) says which flags itself
    const flag = `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    const value = raw[key];
    return `${flag}: ${issue.message}${value === undefined ? '' : ` (got ${JSON.stringify(value)})`}`;
  });
  throw new GramfuseError(ErrorCode.InvalidArgument, problems.join('; '), { facts: { problems: problems.length } });
}

const int = (min: number) => z.coerce.number().int(`must be a whole number`).min(min, `must be at least ${min}`);
const fraction = z.coerce.number().min(0, 'must be between 0 and 1').max(1, 'must be between 0 and 1');

export const commonDataFlags = {
  tokenizer: z.string({ message: 'name a tokenizer.json (a Hugging Face directory given as --model supplies its own)' }).min(1),
  maxExamples: int(1).optional(),
  seed: int(0).default(1),
  batchSize: int(1).default(32),
  maxLength: int(8).default(128),
  textField: z.string().default('text'),
  labelField: z.string().default('label'),
  threads: int(1).optional(),
  memoryBudget: z
    .string()
    .refine((text) => parseByteSize(text) !== undefined, 'must be a size such as 8GB, 512MiB or a number of bytes')
    .transform((text) => parseByteSize(text)!)
    .optional(),
  json: z.boolean().default(false),
};

/** The merge settings a local merge and an agent both take (they must agree for a bundle to merge). */
const mergeSpecFlags = {
  method: z
    .enum(['regmean', 'average', 'task-arithmetic', 'ties'], { message: 'must be regmean, average, task-arithmetic or ties' })
    .default('regmean'),
  alpha: fraction.default(0.9),
  weighting: z.enum(['equal', 'tokens'], { message: 'must be equal or tokens' }).default('equal'),
  includePadding: z.boolean().default(false),
};

/** Where a Hugging Face checkpoint of the result goes, and what names it (merge, job download, export). */
export const hfFlags = {
  hfOut: z.string().min(1).optional(),
  hfCheckpoint: z.string().min(1).optional(),
  hfModel: z.string().min(1).optional(),
};

export const ExportFlags = z
  .object({
    hfOut: z.string().min(1, 'name the checkpoint directory to write').optional(),
    onnxOut: z.string().min(1, 'name the .onnx file to write').optional(),
    hfCheckpoint: z.string().min(1).optional(),
    tokenizer: z.string().min(1).optional(),
    json: z.boolean().default(false),
  })
  .refine((f) => f.hfOut !== undefined || f.onnxOut !== undefined, { message: 'give --hf-out DIR or --onnx-out FILE (or both)' });

/** `merge --alpha`: a number in [0, 1], or `auto` (α chosen after the statistics on validation data). */
const alphaOrAuto = z
  .string()
  .default('0.9')
  .superRefine((text, context) => {
    if (text === 'auto') return;
    const value = text.trim() === '' ? NaN : Number(text);
    if (Number.isNaN(value)) context.addIssue({ code: 'custom', message: 'must be a number between 0 and 1, or auto' });
    else if (value < 0 || value > 1) context.addIssue({ code: 'custom', message: 'must be between 0 and 1' });
  })
  .transform((text) => (text === 'auto' ? ('auto' as const) : Number(text)));

/** `merge --alpha-grid 0.1,0.5,0.9`: the α-auto candidates. */
const alphaGrid = z
  .string()
  .refine(
    (text) => text.split(',').every((part) => part.trim() !== '' && Number(part) >= 0 && Number(part) <= 1),
    'must be a comma-separated list of numbers between 0 and 1, e.g. 0.5,0.9,1',
  )
  .transform((text) => text.split(',').map(Number));

export const MergeFlags = z
  .object({
    ...commonDataFlags,
    ...hfFlags,
    tokenizer: z.string().min(1).optional(),
    model: z.array(z.string()).default([]),
    bundle: z.array(z.string()).default([]),
    template: z.string().optional(),
    data: z.array(z.string()).default([]),
    ...mergeSpecFlags,
    base: z.string().optional(),
    lambda: z.coerce.number().min(0, 'must be at least 0').optional(),
    tiesK: z.coerce.number().gt(0, 'must be in (0, 1]').max(1, 'must be in (0, 1]').default(0.2),
    head: z.enum(['average', 'method'], { message: 'must be average or method' }).optional(),
    out: z.string().min(1, 'name the merged model file'),
    report: z.string().optional(),
    alpha: alphaOrAuto,
    alphaGrid: alphaGrid.optional(),
    validationData: z.array(z.string()).default([]),
    validationMaxExamples: int(1).optional(),
    labels: z.string().min(1).optional(),
    candidates: z.string().min(1).optional(),
    /** Only --alpha auto reads labels (from --validation-data); absent means `label`. */
    labelField: z.string().min(1).optional(),
  })
  .superRefine((flags, context) => {
    if (flags.labelField !== undefined && flags.alpha !== 'auto')
      context.addIssue({
        code: 'custom',
        path: ['labelField'],
        message: 'merge reads labels only with --alpha auto (from --validation-data); add --alpha auto or drop it',
      });
    if (flags.alphaGrid !== undefined && flags.alpha !== 'auto')
      context.addIssue({
        code: 'custom',
        path: ['alphaGrid'],
        message: 'lists the candidates of --alpha auto; add --alpha auto or drop it',
      });
  });

export const EvalFlags = z.object({
  ...commonDataFlags,
  model: z.array(z.string()).min(1, 'give a --model to evaluate'),
  data: z.string().min(1),
  labels: z.string().optional(),
  ensemble: z.boolean().default(false),
  batchSize: int(1).default(64),
});

export const AgentFlags = z.object({
  ...commonDataFlags,
  model: z.string().min(1, "name the owner's model (.onnx or a Hugging Face directory)"),
  data: z.string().min(1, "name the owner's data file"),
  owner: z.string().min(1).optional(),
  ...mergeSpecFlags,
  dtype: z.enum(['auto', 'float64', 'float32'], { message: 'must be auto, float64 or float32' }).default('auto'),
  minRows: int(0).optional(),
  policy: z.string().min(1).optional(),
  allowLayers: z.string().optional(),
  expectFingerprint: z
    .string()
    .regex(/^sha256:[0-9a-f]{64}$/, 'must look like sha256:<64 hex digits>')
    .optional(),
  textPairField: z.string().optional(),
  device: z.enum(['auto', 'cpu', 'cuda'], { message: 'must be auto, cpu or cuda' }).default('auto'),
  out: z.string().min(1).optional(),
});

/** Held-out labelled data and how to read it (eval, agent evaluate). */
export const LabelledDataFlags = z.object({
  ...commonDataFlags,
  data: z.string().min(1, "name the owner's held-out data file"),
  labels: z.string().optional(),
});

/** An agent's tie to a job: mTLS, the coordinator, the job and its work directory (agent run, agent evaluate). */
const jobConnection = {
  ...tls,
  coordinator: address,
  job: z.string().min(1),
  workDir: z.string().min(1),
};

export const AgentEvaluateFlags = LabelledDataFlags.extend({
  ...jobConnection,
  report: z.boolean().default(true),
});

/** `agent run`: the owner's flags plus the upload's. */
export const AgentRunFlags = AgentFlags.extend({
  ...jobConnection,
  yes: z.boolean().default(false),
  chunkBytes: int(1).max(4 * 1024 * 1024, 'must be at most 4194304 (4 MiB, what the coordinator accepts)'),
  nats: z.string().min(1).optional(),
  ...natsSecurity,
  uploadAttempts: int(1),
  uploadWindow: int(1).optional(),
  progressJson: z.boolean().default(false),
});
