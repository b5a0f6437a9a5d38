// The coordinator's solve, run in a worker thread (coordinator/solve-worker.ts): onnxruntime's run() blocks
// the thread that calls it, and the coordinator's main thread must keep serving gRPC while a job solves.
// The work itself is the one merge pipeline (shared/merge/pipeline.ts) over the owners' committed statistics;
// `jobs/<id>/solve/` is its work directory, so a restarted solve skips what is already on disk.
import { createHash } from 'node:crypto';

import { failpoint, ErrorCode, GramfuseError, packageVersion } from '../../shared/index.js';
import { type StatisticId, statisticFile } from '../../shared/federation/index.js';
import { createOrtSolver } from '../../shared/linalg/index.js';
import {
  formatMergeReport,
  mergedMetadata,
  type MergeReport,
  type MergeSpec,
  ownerCounts,
  type PlannedStatistic,
  runMergePipeline,
  type StatisticSource,
} from '../../shared/merge/index.js';
import { type ModelAnalysis } from '../../shared/onnx/index.js';
import { FileStore, type StatisticStore } from '../store/index.js';

export interface SolveRequest {
  readonly stateDir: string;
  readonly jobId: string;
  readonly spec: MergeSpec;
  readonly fingerprint: string;
  readonly analysis: ModelAnalysis;
  /** The owners whose statistics enter the merge (sorted), with their committed statistics. */
  readonly owners: readonly { readonly owner: string; readonly statistics: readonly PlannedStatistic[] }[];
  /**
   * A securely aggregated job: `owners` is then one pseudo-owner, the unmasked sum in jobs/<id>/secure/sum/, and these
   * are the owners in it. Per-owner figures do not exist in this mode; the report says so.
   */
  readonly secure?: { readonly owners: readonly string[] };
}

export interface SolveProgress {
  readonly phase: 'solve' | 'average' | 'write';
  readonly done: number;
  readonly total: number;
  readonly item: string;
  /** Distributed solve: the group's task state and the worker that holds it (nats-executor.ts). */
  readonly state?: string;
  readonly worker?: string;
}

export interface SolveOutcome {
  readonly modelSha256: string;
  readonly modelBytes: number;
  readonly reportSha256: string;
  /** aggregate: reading and summing the owners' statistics (inside the solve and average phases). */
  readonly seconds: { readonly aggregate: number; readonly solve: number; readonly average: number; readonly write: number };
  /** Gram groups whose result was already on disk (a restarted solve). */
  readonly resumedGroups: number;
}

/** The owners' committed statistics in the coordinator's store, as the pipeline's StatisticSource. */
export function committedStatistics(store: StatisticStore, request: SolveRequest): StatisticSource {
  const byOwner = new Map(request.owners.map((o) => [o.owner, new Map(o.statistics.map((s) => [s.id, s]))]));
  return {
    owners: request.owners.map((o) => o.owner),
    describe: (owner: string, id: StatisticId) => byOwner.get(owner)?.get(id),
    read: async (owner: string, id: StatisticId, start: number, length: number) => {
      const s = byOwner.get(owner)?.get(id);
      if (s === undefined)
        throw new GramfuseError(ErrorCode.InvalidData, `job ${request.jobId}: ${owner} committed no statistic ${id}`, {
          facts: { statistic: id },
        });
      const width = s.dtype === 'float32' ? 4 : 8;
      if ((start + length) * width > s.bytes)
        throw new GramfuseError(ErrorCode.InvalidData, `job ${request.jobId}: ${owner}'s committed ${id} is shorter than the model needs`, {
          facts: { statistic: id },
        });
      const bytes = await store.readRange(
        request.secure === undefined
          ? ['jobs', request.jobId, 'owners', owner, 'committed', `${statisticFile(id)}.bin`]
          : ['jobs', request.jobId, 'secure', 'sum', `${statisticFile(id)}.bin`],
        start * width,
        length * width,
      );
      return width === 4
        ? new Float32Array(bytes.buffer, bytes.byteOffset, length)
        : new Float64Array(bytes.buffer, bytes.byteOffset, length);
    },
  };
}

export async function runSolveJob(
  request: SolveRequest,
  onProgress: (progress: SolveProgress) => void = () => undefined,
): Promise<SolveOutcome> {
  const store = new FileStore(request.stateDir);
  const { jobId, analysis, spec } = request;
  if (spec.method !== 'regmean' && spec.method !== 'average')
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `job ${jobId}: the federated solve merges with regmean or average, not ${spec.method}`,
    );
  const job = (...parts: string[]): string[] => ['jobs', jobId, ...parts];
  await store.directory(job('result'));
  const source = committedStatistics(store, request);
  const outcome = await runMergePipeline({
    source,
    analysis,
    spec,
    templatePath: store.path(...job('template.onnx')),
    workDir: store.path(...job('solve')),
    modelPath: store.path(...job('result', 'merged.onnx')),
    safetensorsPath: store.path(...job('result', 'merged.safetensors')),
    metadata: mergedMetadata(spec, request.fingerprint),
    createSolver: () => createOrtSolver({ memoryArena: false }),
    onProgress: ({ phase, done, total, item }) => onProgress({ phase, done, total, item }),
  });

  const ownerFacts: MergeReport['owners'][number][] = [];
  for (const { owner } of request.owners)
    ownerFacts.push({
      name: owner,
      model: request.secure === undefined ? `agent ${owner}` : `sum of ${request.secure.owners.join(', ')}`,
      data: null,
      ...(await ownerCounts(source, owner, analysis, spec)),
    });
  const { seconds } = outcome;
  const report: MergeReport = {
    tool: { name: 'gramfuse', version: packageVersion() },
    createdAt: new Date().toISOString(),
    spec,
    template: `job ${jobId} template`,
    fingerprint: request.fingerprint,
    base: null,
    owners: ownerFacts,
    ...(request.secure === undefined
      ? {}
      : {
          privacy: {
            secureAggregation: true,
            owners: [...request.secure.owners],
            note: 'securely aggregated: the coordinator holds only the sum of these owners’ statistics, so per-owner counts and diagnostics are unavailable; the figures above are totals',
          },
        }),
    layers: outcome.layers,
    averaged: outcome.averaged,
    seconds: {
      collect: 0,
      aggregate: seconds.aggregate,
      solve: seconds.solve + seconds.average,
      write: seconds.write,
      total: seconds.aggregate + seconds.solve + seconds.average + seconds.write,
    },
    peakRssMb: process.resourceUsage().maxRSS / 1024,
    outputs: { model: 'merged.onnx', modelSha256: outcome.model.sha256, safetensors: 'merged.safetensors', report: 'report.json' },
  };
  const reportJson = `${JSON.stringify(report, null, 2)}\n`;
  await store.write(job('result', 'report.json'), reportJson);
  await store.write(job('result', 'report.txt'), `${formatMergeReport(report)}\n`);
  failpoint('write.report');
  return {
    modelSha256: outcome.model.sha256,
    modelBytes: outcome.model.bytes,
    reportSha256: createHash('sha256').update(reportJson).digest('hex'),
    seconds,
    resumedGroups: outcome.resumedGroups,
  };
}
