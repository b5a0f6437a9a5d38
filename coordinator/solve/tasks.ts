// The distributed solve's two pieces of coordinator work that touch matrices, each run in a worker thread (the main
// thread keeps serving gRPC):
//  - prepareSolveTasks: per Gram group not yet committed, Σ G̃ and Σ G̃B summed over the owners exactly as the
//    in-process pipeline sums them, written to `jobs/<id>/solve/tasks/` with their SHA-256 (the task descriptor);
//  - checkSolution: a worker's answer X, checked (shape, finiteness, the relative residual ‖G̃X − R‖/‖R‖ computed
//    here) and, when it passes, committed into the merge's work directory the way the pipeline commits a group it
//    solved itself. The pipeline then finds every group done and only averages and writes.
import { createHash, randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { ErrorCode, GramfuseError, writeFileAtomic } from '../../shared/index.js';
import { statisticFile } from '../../shared/federation/index.js';
import { DEFAULT_JITTER_STEPS } from '../../shared/linalg/index.js';
import {
  groupAggregate,
  groupSolutionValues,
  groupSystem,
  type LayerDiagnostics,
  mergedFiles,
  statisticSums,
} from '../../shared/merge/index.js';
import type { SolveTask } from '../../shared/nats/index.js';
import { StatisticIds } from '../../shared/federation/index.js';
import type { GramGroup, ModelAnalysis } from '../../shared/onnx/index.js';
import { FileStore } from '../store/index.js';
import { committedStatistics, type SolveRequest } from './solve-job.js';

/** Relative residual a worker's solution must stay below (on the jittered system it says it solved). */
export const DEFAULT_RESIDUAL_TOLERANCE = 1e-6;
/** Random right-hand-side combinations the residual is measured on (each costs O(n² + n·rhs), not O(n²·rhs)). */
const PROJECTIONS = 4;

/** What the coordinator keeps of a task beside its files: the descriptor and the group's Σ rows (for the report). */
interface TaskRecord {
  readonly task: SolveTask;
  readonly rows: number;
}

export interface PreparedTasks {
  /** Tasks of the groups not committed yet, in the analysis's order. */
  readonly tasks: SolveTask[];
  /** Groups whose result is already in the work directory. */
  readonly committed: string[];
  readonly total: number;
}

const workDir = (stateDir: string, jobId: string): string => join(stateDir, 'jobs', jobId, 'solve');
const taskBase = (stateDir: string, jobId: string, group: string): string =>
  join(workDir(stateDir, jobId), 'tasks', statisticFile(`group:${group}`));
/** Where a task's part lies on the coordinator. */
export const taskPartPath = (stateDir: string, jobId: string, group: string, part: 'gram' | 'rhs'): string =>
  `${taskBase(stateDir, jobId, group)}.${part}.bin`;

async function readRecord(path: string): Promise<TaskRecord | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as TaskRecord;
  } catch {
    return undefined;
  }
}

const bytesOf = (values: Float64Array): Uint8Array => new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/**
 * Writes the task of every group not committed yet, calling `onTask` as each is ready (the executor publishes it at
 * once, so workers start while the later groups are summed).
 */
export async function prepareSolveTasks(
  request: SolveRequest,
  onTask: (task: SolveTask) => void = () => undefined,
): Promise<PreparedTasks> {
  const { stateDir, jobId, analysis } = request;
  // Answers a stopped coordinator was receiving are void (their workers retry).
  await rm(join(workDir(stateDir, jobId), 'answers'), { recursive: true, force: true });
  const store = new FileStore(stateDir);
  const files = mergedFiles(workDir(stateDir, jobId), analysis);
  const source = committedStatistics(store, request);
  const sums = statisticSums(source);
  const weight = await sums.scalar(StatisticIds.count('weight'));
  const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
  const tasks: SolveTask[] = [];
  const committed: string[] = [];
  for (const group of analysis.gramGroups) {
    if ((await files.solvedGroup(group)) !== undefined) {
      committed.push(group.id);
      continue;
    }
    const recordPath = `${taskBase(stateDir, jobId, group.id)}.json`;
    const existing = await readRecord(recordPath);
    if (existing !== undefined) {
      tasks.push(existing.task);
      onTask(existing.task);
      continue;
    }
    const aggregate = await groupAggregate(sums, analysis, group, weight, source.owners);
    const system = groupSystem(aggregate, group, layers);
    const gram = bytesOf(system.packed);
    const rhs = bytesOf(system.r);
    const task: SolveTask = {
      version: 1,
      job: jobId,
      group: group.id,
      nonce: randomBytes(16).toString('hex'),
      n: system.n,
      rhs: system.rhs,
      gram: { sha256: sha256(gram), bytes: gram.byteLength },
      rhsPart: { sha256: sha256(rhs), bytes: rhs.byteLength },
    };
    await writeFileAtomic(taskPartPath(stateDir, jobId, group.id, 'gram'), gram, 'writing a solve task', true);
    await writeFileAtomic(taskPartPath(stateDir, jobId, group.id, 'rhs'), rhs, 'writing a solve task', true);
    // Written last: its presence says both parts are complete.
    const record: TaskRecord = { task, rows: aggregate.rows[group.id] ?? 0 };
    await writeFileAtomic(recordPath, JSON.stringify(record), 'writing a solve task');
    tasks.push(task);
    onTask(task);
  }
  return { tasks, committed, total: analysis.gramGroups.length };
}

export interface CheckRequest {
  readonly stateDir: string;
  readonly jobId: string;
  readonly analysis: ModelAnalysis;
  readonly group: string;
  /** The worker's X (n × rhs float64), received into this file; removed once checked. */
  readonly answerPath: string;
  readonly worker: string;
  readonly jitter: number;
  readonly conditionEstimate: number;
  readonly seconds: number;
  readonly tolerance: number;
}

export interface CheckOutcome {
  readonly outcome: 'committed' | 'duplicate' | 'rejected';
  readonly reason: string;
  readonly relativeResidual: number;
}

/** Standard normal draws (Box–Muller on crypto-random bits): the worker cannot predict the projections. */
function gaussian(count: number): Float64Array {
  const out = new Float64Array(count);
  const bits = randomBytes(8 * (count + 1));
  for (let i = 0; i < count; i += 2) {
    const u1 = (bits.readUInt32LE(4 * i) + 1) / 4294967297;
    const u2 = bits.readUInt32LE(4 * i + 4) / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u1));
    out[i] = r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < count) out[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

/**
 * ‖(G̃ + δI)X − R‖_F / ‖R‖_F estimated on random Gaussian combinations V of the right-hand sides (rhs × k):
 * E‖E·v‖² = ‖E‖_F² for a standard normal v, so the ratio over k columns estimates the full relative residual,
 * and an X wrong anywhere is caught with probability 1. δ = jitter × mean diagonal (the system the worker solved).
 */
export function projectedResidual(packed: Float64Array, n: number, x: Float64Array, r: Float64Array, rhs: number, jitter: number): number {
  const k = PROJECTIONS;
  const v = gaussian(rhs * k);
  const y = new Float64Array(n * k); // X·V
  const t = new Float64Array(n * k); // R·V
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < rhs; c++) {
      const xv = x[i * rhs + c]!;
      const rv = r[i * rhs + c]!;
      for (let j = 0; j < k; j++) {
        y[i * k + j] = y[i * k + j]! + xv * v[c * k + j]!;
        t[i * k + j] = t[i * k + j]! + rv * v[c * k + j]!;
      }
    }
  }
  let mean = 0;
  {
    let p = 0;
    for (let i = 0; i < n; i++) {
      mean += packed[p]!;
      p += n - i;
    }
    mean /= n;
  }
  const shift = jitter * mean;
  const z = new Float64Array(n * k); // (G̃ + δI)·Y, from the packed upper triangle (row i holds columns i..n-1)
  let p = 0;
  for (let i = 0; i < n; i++) {
    const d = packed[p++]! + shift;
    for (let j = 0; j < k; j++) z[i * k + j] = z[i * k + j]! + d * y[i * k + j]!;
    for (let col = i + 1; col < n; col++) {
      const g = packed[p++]!;
      for (let j = 0; j < k; j++) {
        z[i * k + j] = z[i * k + j]! + g * y[col * k + j]!;
        z[col * k + j] = z[col * k + j]! + g * y[i * k + j]!;
      }
    }
  }
  let en = 0;
  let rn = 0;
  for (let i = 0; i < n * k; i++) {
    const e = z[i]! - t[i]!;
    en += e * e;
    rn += t[i]! * t[i]!;
  }
  return rn === 0 ? (en === 0 ? 0 : Infinity) : Math.sqrt(en / rn);
}

const asFloat64 = (bytes: Buffer): Float64Array => {
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new Float64Array(copy.buffer);
};

export async function checkSolution(request: CheckRequest): Promise<CheckOutcome> {
  const { stateDir, jobId, analysis } = request;
  try {
    const group: GramGroup | undefined = analysis.gramGroups.find((g) => g.id === request.group);
    if (group === undefined) throw new GramfuseError(ErrorCode.Internal, `job ${jobId} has no Gram group ${request.group}`);
    const files = mergedFiles(workDir(stateDir, jobId), analysis);
    if ((await files.solvedGroup(group)) !== undefined)
      return { outcome: 'duplicate', reason: 'the group was already committed', relativeResidual: 0 };
    const record = await readRecord(`${taskBase(stateDir, jobId, group.id)}.json`);
    if (record === undefined) throw new GramfuseError(ErrorCode.StateCorrupt, `job ${jobId}: the task of group ${group.id} is missing`);
    const { n, rhs } = record.task;
    const reject = (reason: string, relativeResidual = Number.NaN): CheckOutcome => ({ outcome: 'rejected', reason, relativeResidual });
    if (request.jitter !== 0 && !DEFAULT_JITTER_STEPS.includes(request.jitter as (typeof DEFAULT_JITTER_STEPS)[number]))
      return reject(`jitter ${request.jitter} is not one of the coordinator's steps (${DEFAULT_JITTER_STEPS.join(', ')})`);
    const x = asFloat64(await readFile(request.answerPath));
    if (x.length !== n * rhs) return reject(`the solution has ${x.length} values, the group needs ${n} × ${rhs}`);
    for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i]!)) return reject(`the solution has a non-finite value at ${i}`);
    const packed = asFloat64(await readFile(taskPartPath(stateDir, jobId, group.id, 'gram')));
    const r = asFloat64(await readFile(taskPartPath(stateDir, jobId, group.id, 'rhs')));
    const residual = projectedResidual(packed, n, x, r, rhs, request.jitter);
    if (!(residual <= request.tolerance))
      return reject(
        `relative residual ${residual.toExponential(2)} is above the tolerance ${request.tolerance.toExponential(0)}`,
        residual,
      );
    const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
    const layer: LayerDiagnostics = {
      group: group.id,
      weights: group.weights,
      inDim: n,
      rhs,
      rows: record.rows,
      jitter: request.jitter,
      conditionEstimate: request.conditionEstimate,
      relativeResidual: residual,
      residualColumns: PROJECTIONS,
      seconds: request.seconds,
      solvedBy: request.worker,
    };
    await files.commitGroup(group, groupSolutionValues(x, group, layers), layer);
    // The group's sums are not needed any more: its task's files go (the committed group answers later fetches).
    const base = taskBase(stateDir, jobId, group.id);
    for (const suffix of ['.json', '.gram.bin', '.rhs.bin']) await rm(`${base}${suffix}`, { force: true });
    return { outcome: 'committed', reason: '', relativeResidual: residual };
  } finally {
    await rm(request.answerPath, { force: true });
  }
}
