// The solve, run in a worker thread (coordinator/solve-worker.ts): onnxruntime's run() blocks the thread
// that calls it, and the coordinator's main thread must keep serving gRPC while a job solves.
//
// Memory is bounded by one Gram group (DESIGN.md §5): for each group the owners' committed Grams and G·W
// products are read from disk one owner at a time and summed, solved, and the merged weights written to
// `jobs/<id>/solve/`; parameters are averaged one at a time the same way. A group whose result is on disk
// is not solved again after a restart. The merged model is then written from those files.
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';

import {
  type Aggregate,
  createOrtSolver,
  failpoint,
  ErrorCode,
  formatMergeReport,
  GramfuseError,
  inlineSizeEstimate,
  isParameterTensor,
  type LayerDiagnostics,
  loadModel,
  type MergeReport,
  type MergeSpec,
  type ModelAnalysis,
  packageVersion,
  type PlannedStatistic,
  PROTOBUF_LIMIT_BYTES,
  saveModel,
  saveModelStreamed,
  solveRegMean,
  tensorBytes,
  tensorWithBytes,
  typedArrayBytes,
  writeFileAtomic,
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
  /** aggregate: reading and summing the owners' statistics (inside the solve and average phases). */
  readonly seconds: { readonly aggregate: number; readonly solve: number; readonly average: number; readonly write: number };
  /** Gram groups whose result was already on disk (a restarted solve). */
  readonly resumedGroups: number;
}

export async function runSolveJob(
  request: SolveRequest,
  onProgress: (progress: SolveProgress) => void = () => undefined,
): Promise<SolveOutcome> {
  const store = new FileStore(request.stateDir);
  const { jobId, analysis, spec } = request;
  const job = (...parts: string[]): string[] => ['jobs', jobId, ...parts];
  const solvedFile = (name: string): string[] => job('solve', `${statisticFile(name)}.bin`);
  const groupFile = (group: string): string[] => job('solve', `${statisticFile(`group:${group}`)}.json`);
  await store.directory(job('solve'));

  const planned = (owner: (typeof request.owners)[number], id: string): PlannedStatistic => {
    const s = owner.statistics.find((x) => x.id === id);
    if (s === undefined)
      throw new GramfuseError(ErrorCode.InvalidData, `job ${jobId}: ${owner.owner} committed no statistic ${id}`, {
        facts: { statistic: id },
      });
    return s;
  };
  const committed = (owner: (typeof request.owners)[number], id: string): string[] =>
    job('owners', owner.owner, 'committed', `${statisticFile(id)}.bin`);
  /** Bytes as float32/float64 values without copying when they are aligned. */
  const view = (bytes: Uint8Array, dtype: 'float32' | 'float64'): Float32Array | Float64Array => {
    const width = dtype === 'float32' ? 4 : 8;
    const aligned = bytes.byteOffset % width === 0 ? bytes : new Uint8Array(bytes);
    return dtype === 'float32'
      ? new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4)
      : new Float64Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 8);
  };
  /** One owner's committed statistic, as stored (checked against its planned size). */
  const read = async (owner: (typeof request.owners)[number], id: string): Promise<Float32Array | Float64Array> => {
    const s = planned(owner, id);
    const bytes = await store.read(committed(owner, id));
    if (bytes === undefined || bytes.byteLength !== s.bytes)
      throw new GramfuseError(ErrorCode.InvalidData, `job ${jobId}: ${owner.owner}'s committed ${id} is missing or has the wrong size`, {
        facts: { statistic: id },
      });
    return view(bytes, s.dtype);
  };
  let aggregateSeconds = 0;
  /** Σ over owners in float64, holding the sum and one owner's statistic at a time. */
  const sumOver = async (id: string): Promise<Float64Array> => {
    const started = performance.now();
    let sum: Float64Array | undefined;
    for (const owner of request.owners) {
      const values = await read(owner, id);
      sum ??= new Float64Array(values.length);
      if (values.length !== sum.length)
        throw new GramfuseError(
          ErrorCode.InvalidData,
          `job ${jobId}: ${owner.owner}'s ${id} has ${values.length} values, others ${sum.length}`,
        );
      for (let i = 0; i < sum.length; i++) sum[i] = sum[i]! + values[i]!;
    }
    aggregateSeconds += (performance.now() - started) / 1000;
    return sum!;
  };
  const dtypes = new Map(analysis.parameters.map((p) => [p.name, p.dtype]));
  const sizes = new Map(analysis.parameters.map((p) => [p.name, p.bytes]));
  /** A merged parameter already on disk, whole (a restarted solve skips it). */
  const hasMerged = async (name: string): Promise<boolean> =>
    (await stat(store.path(...solvedFile(name))).catch(() => undefined))?.size === sizes.get(name);
  /** Writes one merged parameter in its own dtype, refusing non-finite values. */
  const writeMerged = async (name: string, values: Float64Array): Promise<void> => {
    const dtype = dtypes.get(name);
    const typed = dtype === 'float64' ? values : Float32Array.from(values);
    for (let i = 0; i < typed.length; i++) {
      if (!Number.isFinite(typed[i]!)) {
        throw new GramfuseError(
          ErrorCode.NonFinite,
          `parameter ${name}: merged value ${typed[i]} at index ${i} is not finite; nothing was written`,
          {
            facts: { parameter: name, index: i },
          },
        );
      }
    }
    await store.write(solvedFile(name), typedArrayBytes(typed));
  };

  if (spec.method !== 'regmean' && spec.method !== 'average')
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `job ${jobId}: the federated solve merges with regmean or average, not ${spec.method}`,
    );
  const weight = (await Promise.all(request.owners.map((o) => read(o, 'count/weight')))).reduce((s, v) => s + v[0]!, 0);
  const owners = request.owners.map((o) => o.owner);

  // 1. RegMean: one Gram group at a time.
  const started = performance.now();
  const layers: LayerDiagnostics[] = [];
  let resumedGroups = 0;
  const solvedWeights = new Set<string>();
  if (spec.method === 'regmean') {
    const solver = await createOrtSolver({ memoryArena: false });
    try {
      for (const [index, group] of analysis.gramGroups.entries()) {
        for (const w of group.weights) solvedWeights.add(w);
        const done = await store.readJson<LayerDiagnostics>(groupFile(group.id));
        if (done !== undefined && (await Promise.all(group.weights.map(hasMerged))).every(Boolean)) {
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
          failpoint('solve.group');
          layers.push(solved.layers[0]!);
        }
        onProgress({ phase: 'solve', done: index + 1, total: analysis.gramGroups.length, item: group.id });
      }
    } finally {
      await solver.release();
    }
  }
  const solveSeconds = (performance.now() - started) / 1000;
  const aggregateInSolve = aggregateSeconds;

  // 2. Every other parameter: Σ weight·θ / Σ weight (what finishParameters computes for RegMean and average),
  // one slice of one parameter at a time, so an embedding matrix never needs more than a slice in memory.
  const averageStarted = performance.now();
  const averaged = analysis.parameters.filter((p) => !solvedWeights.has(p.name));
  const SLICE = 1 << 20;
  for (const [index, parameter] of averaged.entries()) {
    if (!(await hasMerged(parameter.name))) {
      const id = `parameter/${parameter.name}`;
      const stats = request.owners.map((o) => planned(o, id));
      const count = parameter.shape.reduce((a, b) => a * b, 1);
      const dtype = parameter.dtype === 'float64' ? 'float64' : 'float32';
      const slices = async function* (): AsyncGenerator<Uint8Array> {
        for (let start = 0; start < count; start += SLICE) {
          const length = Math.min(SLICE, count - start);
          const sum = new Float64Array(length);
          const started = performance.now();
          for (const [k, owner] of request.owners.entries()) {
            const width = stats[k]!.dtype === 'float32' ? 4 : 8;
            if (stats[k]!.bytes !== count * width)
              throw new GramfuseError(
                ErrorCode.InvalidData,
                `job ${jobId}: ${owner.owner}'s ${id} has ${stats[k]!.bytes} bytes, the template needs ${count * width}`,
              );
            const values = view(await store.readRange(committed(owner, id), start * width, length * width), stats[k]!.dtype);
            for (let i = 0; i < length; i++) sum[i] = sum[i]! + values[i]!;
          }
          aggregateSeconds += (performance.now() - started) / 1000;
          const merged = dtype === 'float64' ? sum : new Float32Array(length);
          for (let i = 0; i < length; i++) {
            merged[i] = sum[i]! / weight;
            if (!Number.isFinite(merged[i]!)) {
              throw new GramfuseError(
                ErrorCode.NonFinite,
                `parameter ${parameter.name}: merged value ${merged[i]} at index ${start + i} is not finite; nothing was written`,
                { facts: { parameter: parameter.name, index: start + i } },
              );
            }
          }
          yield typedArrayBytes(merged);
        }
      };
      await writeFileAtomic(store.path(...solvedFile(parameter.name)), slices(), 'writing a merged parameter', true);
      failpoint('solve.parameter');
    }
    if (index % 16 === 15 || index === averaged.length - 1)
      onProgress({ phase: 'average', done: index + 1, total: averaged.length, item: parameter.name });
  }
  const averageSeconds = (performance.now() - averageStarted) / 1000;

  // 3. The merged model: the template with each parameter's tensor replaced from its file, one at a time.
  const writeStarted = performance.now();
  const template = await loadModel(store.path('jobs', jobId, 'template.onnx')); // the graph; tensors stay in its side file
  const merged = async (name: string): Promise<Uint8Array> => {
    const bytes = await store.read(solvedFile(name));
    if (bytes === undefined) throw new GramfuseError(ErrorCode.Internal, `job ${jobId}: no merged value for ${name}`);
    return bytes;
  };
  await store.directory(job('result'));
  const modelPath = store.path('jobs', jobId, 'result', 'merged.onnx');
  if (inlineSizeEstimate(template) < PROTOBUF_LIMIT_BYTES - 64 * 1024 * 1024) {
    // One tensor in memory at a time: the template's for structure, the merged file's for parameters.
    await saveModelStreamed(template, modelPath, (tensor) =>
      isParameterTensor(tensor) ? merged(tensor.name ?? '') : Promise.resolve(tensorBytes(template, tensor)),
    );
  } else {
    // Past protobuf's 2 GB the model needs a side file anyway: replace the tensors and let saveModel write it.
    const graph = template.proto.graph!;
    for (const [i, tensor] of graph.initializer.entries())
      if (isParameterTensor(tensor)) graph.initializer[i] = tensorWithBytes(tensor, await merged(tensor.name ?? ''));
    await saveModel(template, modelPath);
  }
  failpoint('write.model');
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
  failpoint('write.safetensors');
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
    seconds: {
      collect: 0,
      aggregate: aggregateSeconds,
      solve: solveSeconds + averageSeconds - aggregateSeconds,
      write: writeSeconds,
      total: solveSeconds + averageSeconds + writeSeconds,
    },
    peakRssMb: process.resourceUsage().maxRSS / 1024,
    outputs: { model: 'merged.onnx', modelSha256: model.sha256, safetensors: 'merged.safetensors', report: 'report.json' },
  };
  const reportJson = `${JSON.stringify(report, null, 2)}\n`;
  await store.write(job('result', 'report.json'), reportJson);
  await store.write(job('result', 'report.txt'), `${formatMergeReport(report)}\n`);
  failpoint('write.report');
  return {
    modelSha256: model.sha256,
    modelBytes: model.bytes,
    reportSha256: createHash('sha256').update(reportJson).digest('hex'),
    seconds: {
      aggregate: aggregateSeconds,
      solve: solveSeconds - aggregateInSolve,
      average: averageSeconds - (aggregateSeconds - aggregateInSolve),
      write: writeSeconds,
    },
    resumedGroups,
  };
}
