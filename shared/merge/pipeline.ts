// The one merge pipeline (DESIGN.md §7): local mode, merges from bundles and the coordinator's solve all run
// it over a StatisticSource, so the three produce byte-identical outputs from the same statistics.
//
// Memory is bounded by one Gram group: per group the owners' Grams and G·W products are read one owner at
// a time and summed in float64, solved, and the merged weights written to the work directory; every other
// parameter is averaged one slice at a time. A group or parameter whose result is complete in the work
// directory is not computed again (a restarted coordinator resumes). The merged model is then written from
// those files, one tensor at a time.
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { ErrorCode, fileError, GramfuseError } from '../errors.js';
import { ensureDirectoryFor, writeFileAtomic } from '../atomic-file.js';
import { type FloatDtype, floatWidth, isFloatDtype } from '../dtypes.js';
import { failpoint } from '../failpoint.js';
import { packageVersion } from '../version.js';
import { type StatisticId, StatisticIds, statisticFile } from '../federation/statistic-id.js';
import type { SpdSolver } from '../linalg/index.js';
import {
  inlineSizeEstimate,
  isParameterTensor,
  loadModel,
  type GramGroup,
  type ModelAnalysis,
  PROTOBUF_LIMIT_BYTES,
  saveModel,
  saveModelStreamed,
  tensorBytes,
  encodeFinite,
} from '../onnx/index.js';
import type { TensorProto } from '../../proto/index.js';
import { sha256OfFile } from '../file-hash.js';
import type { Aggregate } from './contributions.js';
import type { PlannedStatistic } from './plan.js';
import { type LayerDiagnostics, solveRegMean } from './solve.js';
import { SAFETENSORS_DTYPE, writeSafetensorsFrom } from './safetensors.js';
import { alphaAfterStatistics, defaultLambda, type MergeSpec } from './spec.js';

/** Where the pipeline reads the owners' statistics: the coordinator's store, or a local scratch directory. */
export interface StatisticSource {
  /** The owners whose statistics enter the merge; the pipeline sums them in sorted order, whatever this order. */
  readonly owners: readonly string[];
  /** How `owner` stored statistic `id` (dtype and size); `undefined` when it sent none. */
  describe(owner: string, id: StatisticId): PlannedStatistic | undefined;
  /** `length` values of the statistic from value `start`, as stored (float32 or float64). */
  read(owner: string, id: StatisticId, start: number, length: number): Promise<Float32Array | Float64Array>;
}

export interface PipelineProgress {
  readonly phase: 'solve' | 'average' | 'write';
  readonly done: number;
  readonly total: number;
  readonly item: string;
  /** The solved group's diagnostics (phase `solve`, when the group was solved now rather than resumed). */
  readonly layer?: LayerDiagnostics;
}

export interface MergePipelineInput {
  readonly source: StatisticSource;
  readonly analysis: ModelAnalysis;
  readonly spec: MergeSpec;
  /** The ONNX file whose graph the merged model takes (its tensors are read one at a time). */
  readonly templatePath: string;
  /** Scratch for merged parameters; what is complete there is reused, so a restarted merge resumes. */
  readonly workDir: string;
  readonly modelPath: string;
  readonly safetensorsPath: string;
  /** `__metadata__` of merged.safetensors. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Makes the SPD solver for RegMean (released when the solve ends); not called for the other methods. */
  readonly createSolver: () => Promise<SpdSolver>;
  /** The base model's value of a parameter (task arithmetic). @default none: task arithmetic then fails naming --base */
  readonly base?: (name: string) => Float64Array;
  /** Parameters averaged whatever the method (the output head under task arithmetic and TIES). @default none */
  readonly averaged?: ReadonlySet<string>;
  /** Merged values computed before the pipeline (TIES's second round), written as they are. @default none */
  readonly precomputed?: ReadonlyMap<string, Float64Array>;
  /**
   * The α solved when the statistics are α-free (`spec.alphaCandidates`: Σ G, Σ G·B, Σ diag(G)·B): one candidate of
   * α-auto. Required then; not read otherwise (the owners' G̃ already hold `spec.alpha`).
   */
  readonly alpha?: number;
  /** @default no progress */
  readonly onProgress?: (progress: PipelineProgress) => void;
}

export interface MergePipelineOutcome {
  /** One entry per Gram group, in the analysis's order. */
  readonly layers: LayerDiagnostics[];
  /** Every parameter not solved by RegMean. */
  readonly averaged: string[];
  /** Gram groups whose result was already in the work directory. */
  readonly resumedGroups: number;
  /** aggregate: reading and summing statistics (inside the solve and average phases, not added to them). */
  readonly seconds: { readonly aggregate: number; readonly solve: number; readonly average: number; readonly write: number };
  readonly model: { readonly sha256: string; readonly bytes: number };
}

const SLICE = 1 << 20;

/** Runs the merge: Σ per statistic, the RegMean solve per Gram group, every other parameter, then the writers. */
export async function runMergePipeline(input: MergePipelineInput): Promise<MergePipelineOutcome> {
  const { source, analysis, spec } = input;
  const owners = [...source.owners].sort();
  if (owners.length === 0) throw new GramfuseError(ErrorCode.InvalidArgument, 'the merge has no owners: nothing to merge');
  try {
    await mkdir(input.workDir, { recursive: true });
  } catch (error) {
    throw fileError(error, input.workDir, 'creating the merge work directory');
  }

  const sums = statisticSums(source);
  const { sumRange, scalar } = sums;

  const files = mergedFiles(input.workDir, analysis);
  const { elements, width, dtypeOf, cast, isMerged, writeMerged, solvedPath } = files;

  const weight = await scalar(StatisticIds.count('weight'));
  const alphaFree = alphaAfterStatistics(spec);
  if (alphaFree && input.alpha === undefined)
    throw new GramfuseError(ErrorCode.Internal, 'α-free statistics (alpha chosen after the statistics) need the candidate α to solve');

  // 1. RegMean: one Gram group at a time.
  const solveStarted = performance.now();
  const layers: LayerDiagnostics[] = [];
  const solved = new Set<string>();
  let resumedGroups = 0;
  if (spec.method === 'regmean') {
    const solver = await input.createSolver();
    try {
      for (const [index, group] of analysis.gramGroups.entries()) {
        for (const w of group.weights) solved.add(w);
        const done = await files.solvedGroup(group);
        let layer: LayerDiagnostics | undefined;
        if (done !== undefined) {
          layers.push(done);
          resumedGroups++;
        } else {
          const aggregate = await groupAggregate(sums, analysis, group, weight, owners, alphaFree);
          const result = await solveRegMean(aggregate, { ...analysis, gramGroups: [group] }, solver, undefined, input.alpha);
          layer = result.layers[0]!;
          await files.commitGroup(group, result.values, layer);
          layers.push(layer);
        }
        input.onProgress?.({
          phase: 'solve',
          done: index + 1,
          total: analysis.gramGroups.length,
          item: group.id,
          ...(layer ? { layer } : {}),
        });
      }
    } finally {
      await solver.release();
    }
  }
  const solveSeconds = (performance.now() - solveStarted) / 1000;
  const aggregateInSolve = sums.seconds();

  // 2. Every other parameter, one slice at a time: Σ weight·θ / Σ weight (RegMean, average, the averaged head),
  // base + λ·(Σθᵢ − K·base) (task arithmetic), or the precomputed value (TIES).
  const averageStarted = performance.now();
  const averaged = analysis.parameters.filter((p) => !solved.has(p.name));
  const lambda = spec.lambda ?? defaultLambda(spec.method);
  for (const [index, parameter] of averaged.entries()) {
    const name = parameter.name;
    const given = input.precomputed?.get(name);
    if (given !== undefined) await writeMerged(name, given);
    else if (!(await isMerged(name))) {
      const count = elements(name);
      const arithmetic = spec.method === 'task-arithmetic' && input.averaged?.has(name) !== true;
      const base = arithmetic ? baseOf(input, name, count) : undefined;
      const slices = async function* (): AsyncGenerator<Uint8Array> {
        for (let start = 0; start < count; start += SLICE) {
          const length = Math.min(SLICE, count - start);
          const sum = await sumRange(StatisticIds.parameter(name), count, start, length);
          const merged = new Float64Array(length);
          if (base === undefined) for (let i = 0; i < length; i++) merged[i] = sum[i]! / weight;
          else for (let i = 0; i < length; i++) merged[i] = base[start + i]! + lambda * (sum[i]! - owners.length * base[start + i]!);
          yield cast(name, merged, start);
        }
      };
      await writeFileAtomic(solvedPath(name), slices(), 'writing a merged parameter');
      failpoint('solve.parameter');
    }
    if (index % 16 === 15 || index === averaged.length - 1)
      input.onProgress?.({ phase: 'average', done: index + 1, total: averaged.length, item: name });
  }
  const averageSeconds = (performance.now() - averageStarted) / 1000;

  // 3. The merged model: the template with each parameter's tensor replaced from its file, one at a time.
  const writeStarted = performance.now();
  const merged = async (name: string): Promise<Uint8Array> => {
    try {
      return new Uint8Array(await readFile(solvedPath(name)));
    } catch {
      throw new GramfuseError(ErrorCode.Internal, `no merged value for ${name} in ${input.workDir}`);
    }
  };
  const template = await loadModel(input.templatePath); // the graph; external tensors stay in the side file
  await ensureDirectoryFor(input.modelPath);
  const valueOf = (tensor: TensorProto): Promise<Uint8Array> =>
    isParameterTensor(tensor) ? merged(tensor.name ?? '') : Promise.resolve(tensorBytes(template, tensor));
  if (inlineSizeEstimate(template) <= PROTOBUF_LIMIT_BYTES - 64 * 1024 * 1024) {
    await saveModelStreamed(template, input.modelPath, valueOf);
  } else {
    // Past protobuf's 2 GB the model needs a side file: `merged.onnx.data`, written a tensor at a time, its SHA-256
    // in the model's metadata (so the model's own digest vouches for it).
    await saveModel(template, input.modelPath, { externalData: 'always', tensorBytes: valueOf });
  }
  failpoint('write.model');
  input.onProgress?.({ phase: 'write', done: 1, total: 2, item: 'merged.onnx' });
  await writeSafetensorsFrom(
    input.safetensorsPath,
    analysis.parameters.map((p) => ({
      name: p.name,
      dtype: SAFETENSORS_DTYPE[dtypeOf(p.name)],
      shape: p.shape,
      bytes: elements(p.name) * width(p.name),
      read: () => merged(p.name),
    })),
    { ...input.metadata },
  );
  failpoint('write.safetensors');
  input.onProgress?.({ phase: 'write', done: 2, total: 2, item: 'merged.safetensors' });
  const model = await sha256OfFile(input.modelPath);
  const writeSeconds = (performance.now() - writeStarted) / 1000;
  return {
    layers,
    averaged: averaged.map((p) => p.name),
    resumedGroups,
    seconds: {
      aggregate: sums.seconds(),
      solve: solveSeconds - aggregateInSolve,
      average: averageSeconds - (sums.seconds() - aggregateInSolve),
      write: writeSeconds,
    },
    model,
  };
}

/** Σ over owners (in sorted order, in float64) of the statistics of a StatisticSource, a range at a time. */
export interface StatisticSums {
  /** Σ of `length` values from `start`; every owner's statistic must have `expected` values. */
  readonly sumRange: (id: StatisticId, expected: number, start: number, length: number) => Promise<Float64Array>;
  readonly sumAll: (id: StatisticId, expected: number) => Promise<Float64Array>;
  readonly scalar: (id: StatisticId) => Promise<number>;
  /** Seconds spent reading and summing so far. */
  readonly seconds: () => number;
}

/** The sums the pipeline (and the distributed solve's task preparation) take: the sum and one owner's slice in memory. */
export function statisticSums(source: StatisticSource): StatisticSums {
  const owners = [...source.owners].sort();
  const planned = (owner: string, id: StatisticId): PlannedStatistic => {
    const s = source.describe(owner, id);
    if (s === undefined)
      throw new GramfuseError(ErrorCode.InvalidData, `${owner} sent no statistic ${id}`, { facts: { owner, statistic: id } });
    return s;
  };
  const values = (s: PlannedStatistic): number => s.bytes / (s.dtype === 'float32' ? 4 : 8);
  let seconds = 0;
  const sumRange = async (id: StatisticId, expected: number, start: number, length: number): Promise<Float64Array> => {
    const started = performance.now();
    const sum = new Float64Array(length);
    for (const owner of owners) {
      const found = values(planned(owner, id));
      if (found !== expected)
        throw new GramfuseError(ErrorCode.InvalidData, `${owner}'s ${id} has ${found} values, the model needs ${expected}`, {
          facts: { owner, statistic: id },
        });
      const part = await source.read(owner, id, start, length);
      for (let i = 0; i < length; i++) sum[i] = sum[i]! + part[i]!;
    }
    seconds += (performance.now() - started) / 1000;
    return sum;
  };
  const sumAll = (id: StatisticId, expected: number): Promise<Float64Array> => sumRange(id, expected, 0, expected);
  return { sumRange, sumAll, scalar: async (id) => (await sumAll(id, 1))[0]!, seconds: () => seconds };
}

/**
 * One Gram group's aggregate (its Σ G̃, Σ G̃B of each member, Σ rows): what its solve needs, and nothing else. With
 * `alphaFree` (α chosen after the statistics) also Σ diag(G)·B of each member, and the Grams are α-free.
 */
export async function groupAggregate(
  sums: StatisticSums,
  analysis: ModelAnalysis,
  group: GramGroup,
  weight: number,
  owners: readonly string[],
  alphaFree = false,
): Promise<Aggregate> {
  const n = group.inDim;
  const linear = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
  const aggregate: Aggregate = {
    fingerprint: analysis.fingerprint,
    owners: [...owners].sort(),
    weight,
    rows: { [group.id]: await sums.scalar(StatisticIds.rows(group.id)) },
    grams: new Map([[group.id, await sums.sumAll(StatisticIds.gram(group.id), (n * (n + 1)) / 2)]]),
    gramTimesWeight: new Map(),
    diagTimesWeight: new Map(),
    parameters: new Map(),
  };
  for (const w of group.weights) {
    aggregate.gramTimesWeight.set(w, await sums.sumAll(StatisticIds.gramTimesWeight(w), n * linear.get(w)!.outDim));
    if (alphaFree) aggregate.diagTimesWeight.set(w, await sums.sumAll(StatisticIds.diagTimesWeight(w), n * linear.get(w)!.outDim));
  }
  return aggregate;
}

/**
 * The merge's work directory: one file per merged parameter (in its own dtype) and one JSON per solved Gram group,
 * written last, so its presence says the group's weights are all on disk. What is complete there is not computed again.
 */
export interface MergedFiles {
  readonly solvedPath: (name: string) => string;
  readonly elements: (name: string) => number;
  readonly dtypeOf: (name: string) => FloatDtype;
  readonly width: (name: string) => number;
  /** One merged parameter's values in its own dtype; non-finite values are refused, naming the parameter. */
  readonly cast: (name: string, merged: Float64Array, offset?: number) => Uint8Array;
  readonly isMerged: (name: string) => Promise<boolean>;
  readonly writeMerged: (name: string, merged: Float64Array) => Promise<void>;
  /** The group's diagnostics when its result is complete on disk. */
  readonly solvedGroup: (group: GramGroup) => Promise<LayerDiagnostics | undefined>;
  /** Writes the group's merged weights, then its diagnostics (the commit point). */
  readonly commitGroup: (group: GramGroup, values: ReadonlyMap<string, Float64Array>, layer: LayerDiagnostics) => Promise<void>;
}

export function mergedFiles(workDir: string, analysis: ModelAnalysis): MergedFiles {
  const parameters = new Map(analysis.parameters.map((p) => [p.name, p]));
  const solvedPath = (name: string): string => join(workDir, `${statisticFile(name)}.bin`);
  const groupPath = (group: string): string => join(workDir, `${statisticFile(`group:${group}`)}.json`);
  const elements = (name: string): number => parameters.get(name)!.shape.reduce((a, b) => a * b, 1);
  const dtypeOf = (name: string): FloatDtype => {
    const dtype = parameters.get(name)!.dtype;
    if (!isFloatDtype(dtype))
      throw new GramfuseError(ErrorCode.UnsupportedDtype, `parameter ${name}: cannot write merged ${dtype} values`, {
        facts: { parameter: name },
      });
    return dtype;
  };
  const width = (name: string): number => floatWidth(dtypeOf(name));
  const cast = (name: string, merged: Float64Array, offset = 0): Uint8Array => encodeFinite(name, merged, dtypeOf(name), offset);
  const isMerged = async (name: string): Promise<boolean> =>
    (await stat(solvedPath(name)).catch(() => undefined))?.size === elements(name) * width(name);
  const writeMerged = (name: string, merged: Float64Array): Promise<void> =>
    writeFileAtomic(solvedPath(name), cast(name, merged), 'writing a merged parameter');
  return {
    solvedPath,
    elements,
    dtypeOf,
    width,
    cast,
    isMerged,
    writeMerged,
    solvedGroup: async (group) => {
      const done = await readJson<LayerDiagnostics>(groupPath(group.id));
      return done !== undefined && (await Promise.all(group.weights.map(isMerged))).every(Boolean) ? done : undefined;
    },
    commitGroup: async (group, values, layer) => {
      for (const w of group.weights) {
        const merged = values.get(w);
        if (merged === undefined) throw new GramfuseError(ErrorCode.Internal, `group ${group.id}: no merged value for ${w}`);
        await writeMerged(w, merged);
      }
      // Written last: its presence says the group's weights are all on disk.
      await writeFileAtomic(groupPath(group.id), JSON.stringify(layer), 'writing a solved group');
      failpoint('solve.group');
    },
  };
}

/** Per owner: examples, real tokens and rows per Gram group, as the owner reported them (for the merge report). */
export async function ownerCounts(
  source: StatisticSource,
  owner: string,
  analysis: ModelAnalysis,
  spec: MergeSpec,
): Promise<{ examples: number; tokens: number; rows: Record<string, number> }> {
  const one = async (id: StatisticId): Promise<number> => (source.describe(owner, id) ? (await source.read(owner, id, 0, 1))[0]! : 0);
  const rows: Record<string, number> = {};
  for (const group of spec.method === 'regmean' ? analysis.gramGroups : []) rows[group.id] = await one(StatisticIds.rows(group.id));
  return { examples: await one(StatisticIds.count('examples')), tokens: await one(StatisticIds.count('tokens')), rows };
}

function baseOf(input: MergePipelineInput, name: string, count: number): Float64Array {
  const base = input.base?.(name);
  if (base === undefined)
    throw new GramfuseError(ErrorCode.InvalidArgument, `task arithmetic needs the base model's ${name} (--base)`, {
      facts: { parameter: name },
    });
  if (base.length !== count)
    throw new GramfuseError(ErrorCode.FingerprintMismatch, `the base model's ${name} has ${base.length} values, the template ${count}`, {
      facts: { parameter: name },
    });
  return base;
}

async function readJson<T>(path: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  try {
    return JSON.parse(text) as T;
  } catch (error) {
    throw new GramfuseError(ErrorCode.StateCorrupt, `${path}: not valid JSON (${(error as Error).message})`, { facts: { path } });
  }
}

/** merged.safetensors' `__metadata__`, the same in every mode (so the three modes' files are byte-identical). */
export function mergedMetadata(spec: MergeSpec, fingerprint: string): Record<string, string> {
  return { producer: `gramfuse ${packageVersion()}`, method: spec.method, fingerprint };
}
