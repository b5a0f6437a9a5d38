import { basename, dirname, extname, resolve } from 'node:path';

import { ErrorCode, formatBytes, formatTable, GramfuseError } from '../shared/index.js';
import {
  checkPolicyAfterCollection,
  checkPolicyBeforeCollection,
  type DisclosurePlan,
  type DisclosurePolicy,
  type GramTokens,
  type MergeSpec,
  planDisclosure,
  statisticsDtype,
  abandonBundle,
  finishBundle,
  startBundle,
} from '../shared/merge/index.js';
import { type ModelAnalysis } from '../shared/onnx/index.js';
import type { Progress } from './collect/index.js';
import { readExamples } from './collect/index.js';
import { loadTokenizer } from './collect/index.js';
import { analyzeInWorker, collectInWorker } from './collect/index.js';

/** What `gramfuse agent plan|collect` take (validated by the CLI). */
export interface AgentOptions {
  readonly model: string;
  readonly data: string;
  readonly tokenizer: string;
  /** Owner name in the plan; default from the model path. */
  readonly owner?: string;
  readonly spec: MergeSpec;
  /** The statistics' dtype; `auto`: float32 for models over 1 GiB of parameters (shared/merge/plan.ts), else float64. */
  readonly dtype: 'auto' | 'float32' | 'float64';
  readonly policy: DisclosurePolicy;
  /** The job's model fingerprint: the agent refuses to compute for a different model. */
  readonly expectFingerprint?: string;
  readonly maxLength: number;
  readonly batchSize: number;
  readonly maxExamples?: number;
  readonly seed: number;
  readonly textField: string;
  readonly textPairField?: string;
  readonly device: 'auto' | 'cpu' | 'cuda';
  readonly threads?: number;
  /** Bytes one collection pass's accumulators may take (agent/collect/passes.ts). @default half of the free memory */
  readonly memoryBudget?: number;
  readonly toolVersion: string;
}

export function ownerFromModelPath(path: string): string {
  return basename(path).startsWith('model') ? basename(dirname(resolve(path))) : basename(path, extname(path));
}

/** The plan before anything is computed: every statistic that would leave, and the policy. */
export async function planForOwner(
  options: AgentOptions,
): Promise<{ plan: DisclosurePlan; examples: number; analysis: ModelAnalysis; usableExamples: number }> {
  const analysis = await analyzeInWorker(options.model);
  if (options.expectFingerprint !== undefined && analysis.fingerprint !== options.expectFingerprint) {
    throw new GramfuseError(
      ErrorCode.FingerprintMismatch,
      `${options.model}: fingerprint ${analysis.fingerprint} is not the job's ${options.expectFingerprint}; this owner's model was not fine-tuned from the job's base (or was exported differently)`,
      { facts: { model: options.model, found: analysis.fingerprint, expected: options.expectFingerprint } },
    );
  }
  const tokenizer = await loadTokenizer(options.tokenizer, { maxLength: options.maxLength }); // fail early on a bad tokenizer
  let examples = 0;
  // Chat rows are rendered here too, so a conversation the template refuses fails before anything is computed.
  const fields = {
    textField: options.textField,
    chatTemplate: tokenizer.chatTemplate,
    ...(options.textPairField === undefined ? {} : { textPairField: options.textPairField }),
  };
  for await (const _ of readExamples(options.data, fields)) examples++;
  if (examples === 0)
    throw new GramfuseError(ErrorCode.InvalidData, `${options.data}: no usable examples`, { facts: { path: options.data } });
  const owner = options.owner ?? ownerFromModelPath(options.model);
  const plan = planDisclosure(owner, analysis, options.spec, statisticsDtype(options.dtype, analysis), options.policy);
  checkPolicyBeforeCollection(plan);
  return {
    plan,
    examples: options.maxExamples === undefined ? examples : Math.min(examples, options.maxExamples),
    analysis,
    usableExamples: examples,
  };
}

/** `gramfuse agent collect`: plan, collect in the worker, check the policy, write a verified bundle. */
export async function collectBundle(
  options: AgentOptions & {
    readonly out: string;
    readonly onProgress?: (p: Progress) => void;
    readonly onDevice?: (reason: string) => void;
  },
) {
  const { plan, analysis, usableExamples } = await planForOwner(options);
  const bundle = await startBundle(options.out);
  try {
    const result = await collectInWorker(
      {
        owner: plan.owner,
        // The plan already analysed the model and counted the data: the worker need not again.
        analysis,
        examples: usableExamples,
        plan,
        statisticsPath: bundle.statisticsPath,
        modelPath: options.model,
        dataPath: options.data,
        tokenizerPath: options.tokenizer,
        spec: options.spec,
        maxLength: options.maxLength,
        batchSize: options.batchSize,
        seed: options.seed,
        textField: options.textField,
        device: options.device,
        ...(options.textPairField === undefined ? {} : { textPairField: options.textPairField }),
        ...(options.maxExamples === undefined ? {} : { maxExamples: options.maxExamples }),
        ...(options.threads === undefined ? {} : { threads: options.threads }),
        ...(options.memoryBudget === undefined ? {} : { memoryBudget: options.memoryBudget }),
      },
      options.onProgress,
    );
    options.onDevice?.(result.device.reason);
    const checked = checkPolicyAfterCollection(plan, result.statistics.rows);
    const manifest = await finishBundle(
      bundle,
      checked,
      result.sha256,
      {
        model: options.model,
        data: options.data,
        tokenizer: options.tokenizer,
        maxLength: options.maxLength,
        batchSize: options.batchSize,
        maxExamples: options.maxExamples ?? null,
        seed: options.seed,
        textField: options.textField,
        device: result.device.device,
        examples: result.statistics.examples,
        tokens: result.statistics.tokens,
        passes: result.passes.length,
        memoryBudget: result.memoryBudget,
        peakRssBytes: result.peakRssBytes,
        seconds: result.seconds,
      },
      options.toolVersion,
    );
    return { manifest, result };
  } catch (error) {
    await abandonBundle(bundle);
    throw error;
  }
}

/** Which tokens enter the Grams, for the printed plan. */
function gramTokensLine(tokens: GramTokens): string {
  const which =
    tokens === 'all'
      ? 'every position of every example, padding included (--include-padding)'
      : 'every token of every example except padding';
  return `tokens in the Grams: ${which}; a chat example counts whole (every role's turns, the template's markers and special tokens)`;
}

/** The plan as a person reads it: one row per statistic, then totals and the policy. */
export function formatPlan(plan: DisclosurePlan, examples?: number): string {
  const counts = new Map<string, number>();
  for (const s of plan.statistics) counts.set(s.kind, (counts.get(s.kind) ?? 0) + 1);
  const rows = plan.statistics.map((s) => [
    s.id,
    s.kind,
    s.tensors.length > 2 ? `${s.tensors.slice(0, 2).join(', ')}, …` : s.tensors.join(', ') || '-',
    `[${s.shape.join(', ')}]${s.packing === 'upper_triangle' ? ' packed' : ''}`,
    s.dtype,
    s.bytes,
    s.rows ?? '-',
  ]);
  return [
    `Disclosure plan for owner ${plan.owner}: everything below would leave this machine, and nothing else.`,
    `model fingerprint ${plan.fingerprint}; method ${plan.spec.method}${plan.spec.method === 'regmean' ? ` (alpha ${plan.spec.alpha}, weighting ${plan.spec.weighting}, padding ${plan.spec.includePadding ? 'included' : 'excluded'})` : ''}${examples === undefined ? '' : `; ${examples} examples`}`,
    '',
    formatTable(['statistic', 'kind', 'tensors', 'shape', 'dtype', 'bytes', 'rows'], rows),
    '',
    `totals: ${plan.totals.statistics} statistics (${[...counts].map(([k, n]) => `${n} ${k}`).join(', ')}), ${formatBytes(plan.totals.bytes)}`,
    `policy: at least ${plan.policy.minRowsPerGroup} rows per Gram (checked after collection); layers allowed: ${plan.policy.allowedLayers === undefined ? 'all' : plan.policy.allowedLayers.join(', ')}`,
    ...(plan.gramTokens === undefined ? [] : [gramTokensLine(plan.gramTokens)]),
    'No raw text, token ids, activations or labels leave: only the sums above.',
  ].join('\n');
}
