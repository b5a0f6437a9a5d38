// The distributed solve's two pieces of coordinator work that touch matrices, each run in a worker thread (the main
// thread keeps serving gRPC):
//  - prepareSolveTasks: per Gram group not yet committed, Σ G̃ and Σ G̃B summed over the owners exactly as the
//    in-process pipeline sums them, written to `jobs/<id>/solve/tasks/` with their SHA-256 (the task descriptor);
//  - checkSolution: a worker's answer X, checked against the coordinator's own factorization of Σ G̃ (its jitter,
//    condition estimate, residual and forward error on random projections: verifySolution) and, when it passes,
//    committed into the merge's work directory the way the pipeline commits a group it solved itself, with the
//    coordinator's diagnostics. The pipeline then finds every group done and only averages and writes.
import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { ErrorCode, GramfuseError, writeFileAtomic } from '../../shared/index.js';
import { statisticFile } from '../../shared/federation/index.js';
import {
  createOrtSolver,
  DEFAULT_JITTER_STEPS,
  matmulNative,
  packedLength,
  type SolveDiagnostics,
  type SpdSolver,
  unpackSymmetric,
} from '../../shared/linalg/index.js';
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

/** The most a worker's relative residual (and forward error) may be, whatever the group's condition (see checkTolerance). */
export const DEFAULT_RESIDUAL_TOLERANCE = 1e-6;

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
  /** The diagonal jitter the worker says it solved with: accepted only when it is the one the coordinator's factorization needs. */
  readonly jitter: number;
  /** Seconds from the worker's fetch of the group's Σ G̃ (its delivery) to its answer, measured on the coordinator. */
  readonly seconds: number;
  /** The most a relative residual or forward error may be, whatever the condition (`--residual-tolerance`). */
  readonly tolerance: number;
  /** Bytes per read of a task part or an answer. @default READ_SLICE_BYTES */
  readonly sliceBytes?: number;
}

export interface CheckOutcome {
  readonly outcome: 'committed' | 'duplicate' | 'rejected';
  readonly reason: string;
  readonly relativeResidual: number;
}

/** Random right-hand-side combinations an answer is checked on (each column costs O(n²), not O(n²·rhs)). */
export const CHECK_PROJECTIONS = 16;
/**
 * Bytes per read when the check loads a task part or an answer: fs.readFile refuses files of 2 GiB and more, which
 * Σ G̃ packed reaches at n = 23 171.
 */
export const READ_SLICE_BYTES = 64 * 1024 * 1024;
/** c in the check's tolerance c·n·ε·κ̂ (what an honest float64 Cholesky solve on other hardware stays within). */
const TOLERANCE_FACTOR = 64;

/**
 * The check's tolerance for a group of order n whose Cholesky factor (on the coordinator) estimates the condition κ̂:
 * c·n·ε·max(1, κ̂), never above `cap`. A residual ρ lets X move by up to κ·ρ; a fixed 1e-6 let a worker's X move by
 * 1e-6·κ (100 % at κ = 1e8) and still pass.
 */
export function checkTolerance(n: number, conditionEstimate: number, cap: number): number {
  const scaled = TOLERANCE_FACTOR * n * Number.EPSILON * Math.max(1, conditionEstimate);
  return Number.isFinite(scaled) ? Math.min(cap, scaled) : cap;
}

/**
 * `count` float64 values from a file that must hold exactly that many, read `sliceBytes` at a time into one array
 * (never one read of the whole file). Undefined when the file's size is not `count` × 8.
 */
export async function readFloat64File(path: string, count: number, sliceBytes = READ_SLICE_BYTES): Promise<Float64Array | undefined> {
  const file = await open(path, 'r');
  try {
    const size = (await file.stat()).size;
    if (size !== count * 8) return undefined;
    const out = new Float64Array(count);
    const bytes = new Uint8Array(out.buffer);
    for (let at = 0; at < size;) {
      const { bytesRead } = await file.read(bytes, at, Math.min(sliceBytes, size - at), at);
      if (bytesRead === 0) return undefined;
      at += bytesRead;
    }
    return out;
  } finally {
    await file.close();
  }
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

export interface VerifyInput {
  /** Σ G̃, packed upper triangle. */
  readonly packed: Float64Array;
  readonly n: number;
  /** Σ G̃B, n × rhs. */
  readonly r: Float64Array;
  readonly rhs: number;
  /** The worker's X, n × rhs (finite). */
  readonly x: Float64Array;
  /** The jitter the worker says it used. */
  readonly claimedJitter: number;
  /** Cap of the tolerance (see checkTolerance). */
  readonly tolerance: number;
  /** For a SOLVE_FAILED / NON_FINITE message: the group and its weights. */
  readonly label: string;
}

export type Verdict =
  | { readonly accepted: true; readonly diagnostics: SolveDiagnostics }
  | { readonly accepted: false; readonly reason: string; readonly relativeResidual: number };

/**
 * The coordinator's verdict on a worker's X, every figure its own: it factors Σ G̃ itself with the jitter ladder the
 * in-process solve uses (DEFAULT_JITTER_STEPS), so the jitter is the coordinator's decision (an answer solved at any
 * other jitter is refused), and solves CHECK_PROJECTIONS random combinations of the right-hand sides with that factor.
 * X must match them (forward error) and solve the system (residual, in onnxruntime), both within checkTolerance of the
 * coordinator's condition estimate. Costs one factorization (n³/3, as the solve's own) plus O(n²) per projection.
 * A Gram the coordinator cannot factor either fails the check with the solver's SOLVE_FAILED, as it fails the in-process solve.
 */
export async function verifySolution(input: VerifyInput, solver: SpdSolver): Promise<Verdict> {
  const { packed, n, r, rhs, x, label } = input;
  const k = CHECK_PROJECTIONS;
  const v = gaussian(rhs * k);
  const rv = await matmulNative(r, v, n, rhs, k);
  const xv = await matmulNative(x, v, n, rhs, k);
  const a = unpackSymmetric(packed, n);
  const own = await solver.solve(a, n, rv, k, label);
  const refuse = (reason: string, relativeResidual = Number.NaN): Verdict => ({ accepted: false, reason, relativeResidual });
  if (input.claimedJitter !== own.jitter)
    return refuse(
      `${input.claimedJitter > own.jitter ? 'over-jittered: ' : ''}solved with diagonal jitter ${input.claimedJitter} × mean diagonal, the coordinator's factorization of Σ G̃ needs ${own.jitter} (the smallest of 0, ${DEFAULT_JITTER_STEPS.join(', ')} at which it factors)`,
    );
  let mean = 0;
  const diagonal = new Float64Array(n);
  for (let i = 0, p = 0; i < n; p += n - i, i++) mean += diagonal[i] = packed[p]!;
  mean /= n;
  for (let i = 0; i < n; i++) diagonal[i] = diagonal[i]! + own.jitter * mean;
  const residual = await solver.residual(a, n, xv, rv, k, diagonal);
  let en = 0;
  let xn = 0;
  for (let i = 0; i < n * k; i++) {
    en += (xv[i]! - own.x[i]!) ** 2;
    xn += own.x[i]! ** 2;
  }
  const forward = xn === 0 ? (en === 0 ? 0 : Infinity) : Math.sqrt(en / xn);
  const tolerance = checkTolerance(n, own.conditionEstimate, input.tolerance);
  const bound = `the tolerance ${tolerance.toExponential(1)} (${TOLERANCE_FACTOR}·n·ε·κ̂ at the coordinator's condition estimate ${own.conditionEstimate.toExponential(1)}, at most ${input.tolerance.toExponential(0)})`;
  if (!(residual <= tolerance)) return refuse(`relative residual ${residual.toExponential(2)} is above ${bound}`, residual);
  if (!(forward <= tolerance))
    return refuse(
      `it differs from the coordinator's own solve of ${k} random projections by ${forward.toExponential(2)}, above ${bound}`,
      residual,
    );
  return {
    accepted: true,
    diagnostics: {
      jitter: own.jitter,
      conditionEstimate: own.conditionEstimate,
      relativeResidual: residual,
      residualColumns: k,
      seconds: 0,
    },
  };
}

let checkSolver: Promise<SpdSolver> | undefined;

export async function checkSolution(request: CheckRequest): Promise<CheckOutcome> {
  const { stateDir, jobId, analysis } = request;
  const slice = request.sliceBytes ?? READ_SLICE_BYTES;
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
    const x = await readFloat64File(request.answerPath, n * rhs, slice);
    if (x === undefined) return reject(`the solution is not ${n} × ${rhs} float64 values`);
    for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i]!)) return reject(`the solution has a non-finite value at ${i}`);
    const part = async (name: 'gram' | 'rhs', count: number): Promise<Float64Array> => {
      const values = await readFloat64File(taskPartPath(stateDir, jobId, group.id, name), count, slice);
      if (values === undefined)
        throw new GramfuseError(
          ErrorCode.StateCorrupt,
          `job ${jobId}: the ${name} part of group ${group.id}'s task is not ${count} values`,
        );
      return values;
    };
    const packed = await part('gram', packedLength(n));
    const r = await part('rhs', n * rhs);
    checkSolver ??= createOrtSolver({ memoryArena: false });
    const verdict = await verifySolution(
      {
        packed,
        n,
        r,
        rhs,
        x,
        claimedJitter: request.jitter,
        tolerance: request.tolerance,
        label: `${group.id} (${group.weights.join(', ')})`,
      },
      await checkSolver,
    );
    if (!verdict.accepted) return reject(verdict.reason, verdict.relativeResidual);
    const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
    // Every figure is the coordinator's: nothing the worker says about its solve reaches the report.
    const layer: LayerDiagnostics = {
      group: group.id,
      weights: group.weights,
      inDim: n,
      rhs,
      rows: record.rows,
      ...verdict.diagnostics,
      seconds: request.seconds,
      solvedBy: request.worker,
    };
    await files.commitGroup(group, groupSolutionValues(x, group, layers), layer);
    // The group's sums are not needed any more: its task's files go (the committed group answers later fetches).
    const base = taskBase(stateDir, jobId, group.id);
    for (const suffix of ['.json', '.gram.bin', '.rhs.bin']) await rm(`${base}${suffix}`, { force: true });
    return { outcome: 'committed', reason: '', relativeResidual: verdict.diagnostics.relativeResidual };
  } finally {
    await rm(request.answerPath, { force: true });
  }
}
