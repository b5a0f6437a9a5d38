// The solve, run in a worker thread (coordinator/solve-worker.ts): onnxruntime's run() blocks the thread
// that calls it, and the coordinator's main thread must keep serving gRPC while a job solves.
//
// Memory is bounded by one Gram group (DESIGN.md §5): for each group the owners' committed Grams and G·W
// products are read from disk one owner at a time and summed, solved, and the merged weights written to
// `jobs/<id>/solve/`; parameters are averaged one at a time the same way. A group whose result is on disk
// is not solved again after a restart. The merged model is then written from those files.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';

import {
  type Aggregate,
  createOrtSolver,
  ErrorCode,
  finishParameters,
  formatMergeReport,
  GramfuseError,
  isParameterTensor,
  type LayerDiagnostics,
  loadModel,
  type MergeReport,
  type MergeSpec,
  type ModelAnalysis,
  packageVersion,
  type PlannedStatistic,
  saveModel,
  solveRegMean,
  tensorWithBytes,
  typedArrayBytes,
  writeSafetensorsFrom,
} from '../shared/index.js';
import { FileStore, statisticFile } from './store.js';

export interface SolveRequest {
  readonly stateDir: string;
  readonly jobId: string;
  readonly spec: MergeSpec;
  readonly fingerprint: string;
  readonly analysis: ModelAnalysis;
  /** The owners whose statistics enter the merge (sorted), with their committed statistics. */
  readonly owners: readonly { readonly owner: string; readonly statistics: readonly PlannedStatistic[] }[];
}

export interface SolveProgress {
  readonly phase: 'solve' | 'average' | 'write';
  readonly done: number;
  readonly total: number;
  readonly item: string;
}

export interface SolveOutcome {
  readonly modelSha256: string;
  readonly modelBytes: number;
  readonly reportSha256: string;
  readonly seconds: { readonly solve: number; readonly average: number; readonly write: number };
  /** Gram groups whose result was already on disk (a restarted solve). */
  readonly resumedGroups: number;
}

export async function runSolveJob(request: SolveRequest, onProgress: (progress: SolveProgress) => void = () => undefined): Promise<SolveOutcome> {
  const store = new FileStore(request.stateDir);
  const { jobId, analysis, spec } = request;
  const job = (...parts: string[]): string[] => ['jobs', jobId, ...parts];
  const solvedFile = (name: string): string[] => job('solve', `${statisticFile(name)}.bin`);
  const groupFile = (group: string): string[] => job('solve', `${statisticFile(`group:${group}`)}.json`);
  await store.directory(job('solve'));

  const planned = (owner: (typeof request.owners)[number], id: string): PlannedStatistic => {
    const s = owner.statistics.find((x) => x.id === id);
    if (s === undefined)
      throw new GramfuseError(ErrorCode.InvalidData, `job ${jobId}: ${owner.owner} committed no statistic ${id}`, { facts: { statistic: id } });
    return s;
  };
  /** One owner's committed statistic as float64 (a fresh, aligned array). */
  const read = async (owner: (typeof request.owners)[number], id: string): Promise<Float64Array> => {
    const s = planned(owner, id);
    const bytes = await store.read(job('owners', owner.owner, 'committed', `${statisticFile(id)}.bin`));
    if (bytes === undefined || bytes.byteLength !== s.bytes)
      throw new GramfuseError(ErrorCode.InvalidData, `job ${jobId}: ${owner.owner}'s committed ${id} is missing or has the wrong size`, {
        facts: { statistic: id },
      });
    const copy = new Uint8Array(bytes); // aligned, and detached from Node's buffer pool
    return s.dtype === 'float32' ? Float64Array.from(new Float32Array(copy.buffer)) : new Float64Array(copy.buffer);
  };
  const sumOver = async (id: string): Promise<Float64Array> => {
    let sum: Float64Array | undefined;
    for (const owner of request.owners) {
      const values = await read(owner, id);
      if (sum === undefined) sum = values;
      else {
        if (values.length !== sum.length)
          throw new GramfuseError(ErrorCode.InvalidData, `job ${jobId}: ${owner.owner}'s ${id} has ${values.length} values, others ${sum.length}`);
        for (let i = 0; i < sum.length; i++) sum[i] = sum[i]! + values[i]!;
      }
    }
    return sum!;
  };
  const dtypes = new Map(analysis.parameters.map((p) => [p.name, p.dtype]));
  /** Writes one merged parameter in its own dtype, refusing non-finite values. */
  const writeMerged = async (name: string, values: Float64Array): Promise<void> => {
    const dtype = dtypes.get(name);
    const typed = dtype === 'float64' ? values : Float32Array.from(values);
    for (let i = 0; i < typed.length; i++) {
      if (!Number.isFinite(typed[i]!)) {
        throw new GramfuseError(ErrorCode.NonFinite, `parameter ${name}: merged value ${typed[i]} at index ${i} is not finite; nothing was written`, {
          facts: { parameter: name, index: i },
        });
      }
    }
    await store.write(solvedFile(name), typedArrayBytes(typed));
  };

  const weight = (await Promise.all(request.owners.map((o) => read(o, 'count/weight')))).reduce((s, v) => s + v[0]!, 0);
  const owners = request.owners.map((o) => o.owner);

  // 1. RegMean: one Gram group at a time.
  const started = performance.now();
  const layers: LayerDiagnostics[] = [];
  let resumedGroups = 0;
  const solvedWeights = new Set<string>();
  if (spec.method === 'regmean') {
    const solver = await createOrtSolver();
    try {
      for (const [index, group] of analysis.gramGroups.entries()) {
        for (const w of group.weights) solvedWeights.add(w);
        const done = await store.readJson<LayerDiagnostics>(groupFile(group.id));
        if (done !== undefined) {
          layers.push(done);
          resumedGroups++;
        } else {
          let rows = 0;
          for (const owner of request.owners) rows += (await read(owner, `count/rows/${group.id}`))[0]!;
          const aggregate: Aggregate = {
            fingerprint: request.fingerprint,
            owners,
            weight,
            rows: { [group.id]: rows },
            grams: new Map([[group.id, await sumOver(`gram/${group.id}`)]]),
            gramTimesWeight: new Map(),
            parameters: new Map(),
          };
          for (const w of group.weights) aggregate.gramTimesWeight.set(w, await sumOver(`gram_times_weight/${w}`));
          const solved = await solveRegMean(aggregate, { ...analysis, gramGroups: [group] }, solver);
          for (const [name, values] of solved.values) await writeMerged(name, values);
          // Written last: its presence says the group's weights are all on disk.
          await store.write(groupFile(group.id), JSON.stringify(solved.layers[0]));
          layers.push(solved.layers[0]!);
        }
        onProgress({ phase: 'solve', done: index + 1, total: analysis.gramGroups.length, item: group.id });
      }
    } finally {
      await solver.release();
    }
  }
  const solveSeconds = (performance.now() - started) / 1000;

  // 2. Every other parameter: Σ weight·θ / Σ weight, one parameter at a time.
  const averageStarted = performance.now();
  const averaged = analysis.parameters.filter((p) => !solvedWeights.has(p.name));
  for (const [index, parameter] of averaged.entries()) {
    if ((await store.read(solvedFile(parameter.name))) === undefined) {
      const sum = await sumOver(`parameter/${parameter.name}`);
      const merged = finishParameters(
        { fingerprint: request.fingerprint, owners, weight, rows: {}, grams: new Map(), gramTimesWeight: new Map(), parameters: new Map([[parameter.name, sum]]) },
        spec,
        undefined,
      );
      await writeMerged(parameter.name, merged.get(parameter.name)!);
    }
    if (index % 16 === 15 || index === averaged.length - 1)
      onProgress({ phase: 'average', done: index + 1, total: averaged.length, item: parameter.name });
  }
  const averageSeconds = (performance.now() - averageStarted) / 1000;

  // 3. The merged model: the template with each parameter's tensor replaced from its file, one at a time.
  const writeStarted = performance.now();
  const template = await loadModel(store.path('jobs', jobId, 'template.onnx'));
  const graph = template.proto.graph!;
  for (const [i, tensor] of graph.initializer.entries()) {
    if (!isParameterTensor(tensor)) continue;
    const bytes = await store.read(solvedFile(tensor.name ?? ''));
    if (bytes === undefined) throw new GramfuseError(ErrorCode.Internal, `job ${jobId}: no merged value for ${tensor.name}`);
    graph.initializer[i] = tensorWithBytes(tensor, bytes);
  }
  await store.directory(job('result'));
  const modelPath = store.path('jobs', jobId, 'result', 'merged.onnx');
  await saveModel(template, modelPath);
  onProgress({ phase: 'write', done: 1, total: 2, item: 'merged.onnx' });
  await writeSafetensorsFrom(
    store.path('jobs', jobId, 'result', 'merged.safetensors'),
    analysis.parameters.map((p) => ({
      name: p.name,
      dtype: p.dtype === 'float64' ? ('F64' as const) : ('F32' as const),
      shape: p.shape,
      bytes: p.shape.reduce((a, b) => a * b, 1) * (p.dtype === 'float64' ? 8 : 4),
      read: async () => new Uint8Array(await readFile(store.path(...solvedFile(p.name)))),
    })),
    { method: spec.method, fingerprint: request.fingerprint, job: jobId },
  );
  onProgress({ phase: 'write', done: 2, total: 2, item: 'merged.safetensors' });
  const model = await store.sha256(job('result', 'merged.onnx'));
  const writeSeconds = (performance.now() - writeStarted) / 1000;

  const ownerFacts: MergeReport['owners'][number][] = [];
  for (const owner of request.owners) {
    const [examples, tokens] = await Promise.all([read(owner, 'count/examples'), read(owner, 'count/tokens')]);
    const rows: Record<string, number> = {};
    for (const group of spec.method === 'regmean' ? analysis.gramGroups : [])
      rows[group.id] = (await read(owner, `count/rows/${group.id}`))[0]!;
    ownerFacts.push({ name: owner.owner, model: `agent ${owner.owner}`, data: null, examples: examples[0]!, tokens: tokens[0]!, rows });
  }
  const report: MergeReport = {
    tool: { name: 'gramfuse', version: packageVersion() },
    createdAt: new Date().toISOString(),
    spec,
    template: `job ${jobId} template`,
    fingerprint: request.fingerprint,
    base: null,
    owners: ownerFacts,
    layers,
    averaged: averaged.map((p) => p.name),
    seconds: { collect: 0, solve: solveSeconds + averageSeconds, write: writeSeconds, total: solveSeconds + averageSeconds + writeSeconds },
    peakRssMb: process.resourceUsage().maxRSS / 1024,
    outputs: { model: 'merged.onnx', modelSha256: model.sha256, safetensors: 'merged.safetensors', report: 'report.json' },
  };
  const reportJson = `${JSON.stringify(report, null, 2)}\n`;
  await store.write(job('result', 'report.json'), reportJson);
  await store.write(job('result', 'report.txt'), `${formatMergeReport(report)}\n`);
  return {
    modelSha256: model.sha256,
    modelBytes: model.bytes,
    reportSha256: createHash('sha256').update(reportJson).digest('hex'),
    seconds: { solve: solveSeconds, average: averageSeconds, write: writeSeconds },
    resumedGroups,
  };
}
