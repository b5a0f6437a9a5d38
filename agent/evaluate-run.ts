import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { ErrorCode, GramfuseError } from '../shared/index.js';
import type { Progress } from './collect/index.js';
import { evaluateEach, type EvaluationResult } from './evaluate.js';
import { connectFederation, type ConnectOptions, downloadMergedModel } from '../client/index.js';
import { openAgentLedger } from './run/index.js';

export interface EvaluateForJobOptions {
  readonly connect: ConnectOptions;
  readonly jobId: string;
  /** The agent's work directory (the same as `agent run`'s): the merged model and the ledger live there. */
  readonly workDir: string;
  /** The owner's held-out labelled data; it never leaves this machine, only the three metrics do. */
  readonly data: string;
  readonly tokenizer: string;
  /** A JSON list of label names in logit order. Default: the model's `labels` metadata. */
  readonly labels?: string;
  readonly maxExamples?: number;
  readonly seed?: number;
  readonly maxLength?: number;
  readonly textField?: string;
  readonly labelField?: string;
  readonly threads?: number;
  /** Default true: send the metrics to the coordinator (signed into its ledger). False: only evaluate. */
  readonly report?: boolean;
  readonly onProgress?: (progress: Progress) => void;
}

export interface EvaluateForJobResult extends EvaluationResult {
  readonly job: string;
  readonly owner: string;
  /** Where the downloaded (and verified) merged model is kept. */
  readonly model: string;
  readonly modelSha256: string;
  readonly reported: boolean;
}

/**
 * `gramfuse agent evaluate`: download the job's merged model (SHA-256 checked against the job's result
 * digest, written atomically), evaluate it on the owner's held-out data, and report only the metrics.
 * The report is recorded in the agent's own ledger as well as the coordinator's.
 */
export async function evaluateForJob(options: EvaluateForJobOptions): Promise<EvaluateForJobResult> {
  const client = connectFederation(options.connect);
  try {
    const status = await client.getJob(options.jobId);
    if (status.state !== 'done') {
      throw new GramfuseError(ErrorCode.JobClosed, `job ${options.jobId} is ${status.state}; there is no merged model to evaluate yet`, {
        facts: { job: options.jobId, state: status.state },
      });
    }
    const jobDir = join(options.workDir, options.jobId);
    await mkdir(jobDir, { recursive: true });
    const model = join(jobDir, 'merged.onnx');
    // A download never replaces a side file; this one is the agent's own, from an earlier evaluation of this job.
    await rm(`${model}.data`, { force: true });
    const { sha256 } = await downloadMergedModel(client, options.jobId, model, status.resultSha256);
    const [metrics] = await evaluateEach([model], {
      data: options.data,
      tokenizer: options.tokenizer,
      seed: options.seed ?? 1,
      ...(options.labels === undefined ? {} : { labels: options.labels }),
      ...(options.maxExamples === undefined ? {} : { maxExamples: options.maxExamples }),
      ...(options.maxLength === undefined ? {} : { maxLength: options.maxLength }),
      ...(options.textField === undefined ? {} : { textField: options.textField }),
      ...(options.labelField === undefined ? {} : { labelField: options.labelField }),
      ...(options.threads === undefined ? {} : { threads: options.threads }),
      ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
    });
    const { examples, accuracy, macroF1 } = metrics!;
    const report = options.report !== false;
    if (report) {
      await client.reportEvaluation({ jobId: options.jobId, examples: BigInt(examples), accuracy, macroF1 });
      const ledger = await openAgentLedger(options.workDir, client.identity);
      await ledger.append('evaluation.reported', options.jobId, {
        owner: client.identity,
        coordinator: options.connect.address,
        model: sha256,
        examples,
        accuracy,
        macroF1,
      });
    }
    return { job: options.jobId, owner: client.identity, model, modelSha256: sha256, examples, accuracy, macroF1, reported: report };
  } finally {
    client.close();
  }
}
