// Creating a job: the creator's open-job limit, the template (bytes, or a path inside an allowed directory) checked
// against the spec's fingerprint, an idempotent re-create, then the job's files. The caller authorizes first.
import { ErrorCode, GramfuseError, sha256OfFile } from '../../shared/index.js';
import { type JobSpec, parseJobSpec, sha256Hex } from '../../shared/federation/index.js';
import { analyzeModel, loadModel, type ModelAnalysis, saveModel } from '../../shared/onnx/index.js';
import { allowedTemplatePath } from '../intake/index.js';
import type { StatisticStore } from '../store/index.js';
import type { Job } from './job.js';

export interface JobCreationLimits {
  /** Jobs one creator may have open at once. */
  readonly maxOpenJobsPerCreator: number;
  /** Directories a template path may name. */
  readonly templateDirs: readonly string[];
}

export type PreparedJob =
  | { readonly kind: 'existing'; readonly id: string }
  | { readonly kind: 'new'; readonly spec: JobSpec; readonly analysis: ModelAnalysis; readonly templateSha256: string };

/**
 * Checks a job creation and, for a new job, writes its spec and template (tensors in a side file,
 * template.onnx.data, so the coordinator later reads only the graph). The same spec and template again is the
 * existing job; another spec under the same id is INVALID_ARGUMENT.
 */
export async function prepareJob(
  store: StatisticStore,
  jobs: ReadonlyMap<string, Job>,
  identity: string,
  specValue: unknown,
  templateSource: Uint8Array | string,
  limits: JobCreationLimits,
): Promise<PreparedJob> {
  const spec = parseJobSpec(specValue, 'job spec');
  const open = [...jobs.values()].filter(
    (j) => j.persisted.createdBy === identity && j.persisted.state !== 'done' && j.persisted.state !== 'failed' && j.spec.id !== spec.id,
  ).length;
  if (open >= limits.maxOpenJobsPerCreator)
    throw new GramfuseError(
      ErrorCode.ResourceExhausted,
      `${identity} has ${open} open jobs on this coordinator, its limit (--max-open-jobs-per-creator ${limits.maxOpenJobsPerCreator}); wait for one to finish`,
      { facts: { identity, open, limit: limits.maxOpenJobsPerCreator } },
    );
  if (typeof templateSource === 'string') templateSource = await allowedTemplatePath(templateSource, limits.templateDirs);
  const template = await loadModel(templateSource);
  const analysis = await analyzeModel(template, { probe: false });
  if (spec.fingerprint !== undefined && spec.fingerprint !== analysis.fingerprint) {
    throw new GramfuseError(
      ErrorCode.FingerprintMismatch,
      `job spec fingerprint ${spec.fingerprint} is not the template's ${analysis.fingerprint}`,
      {
        facts: { job: spec.id },
      },
    );
  }
  const existing = jobs.get(spec.id);
  if (existing !== undefined) {
    if (JSON.stringify(existing.spec) === JSON.stringify(spec) && existing.fingerprint === analysis.fingerprint)
      return { kind: 'existing', id: spec.id };
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `job ${spec.id} already exists with a different spec or template; choose another id`,
      {
        facts: { job: spec.id },
      },
    );
  }
  const templateSha256 = typeof templateSource === 'string' ? (await sha256OfFile(templateSource)).sha256 : sha256Hex(templateSource);
  await store.directory(['jobs', spec.id]);
  await saveModel(template, store.path('jobs', spec.id, 'template.onnx'), { externalData: 'always' });
  await store.write(['jobs', spec.id, 'spec.json'], JSON.stringify(spec, null, 2));
  return { kind: 'new', spec, analysis, templateSha256 };
}
