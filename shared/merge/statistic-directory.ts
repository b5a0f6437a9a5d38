import { mkdtemp, open, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { ErrorCode, fileError, GramfuseError } from '../errors.js';
import { writeFileAtomic } from '../atomic-file.js';
import { typedArrayBytes } from '../dtypes.js';
import { type StatisticId, statisticFile } from '../federation/statistic-id.js';
import type { StatisticSource } from './pipeline.js';
import type { DisclosurePlan, PlannedStatistic } from './plan.js';
import { readSafetensorsHeader } from './safetensors.js';

/**
 * A StatisticSource on local disk: local mode and merges from bundles put each owner's statistics here (as
 * the coordinator's store holds its owners' committed ones), so one owner's tensors are in memory at a time
 * and the pipeline reads them back a slice at a time. Removed with `remove()`.
 */
export class StatisticDirectory implements StatisticSource {
  /** owner → statistic id → where its values lie (a file of their own, or a range of a safetensors file). */
  private readonly plans = new Map<string, Map<string, { statistic: PlannedStatistic; path: string; offset: number }>>();

  private constructor(readonly root: string) {}

  /** A new empty directory under `parent` (the output's folder, so the merge's scratch is on the same disk). */
  static async create(parent: string): Promise<StatisticDirectory> {
    try {
      return new StatisticDirectory(await mkdtemp(join(parent, '.gramfuse-merge-')));
    } catch (error) {
      throw fileError(error, parent, 'creating the merge scratch directory');
    }
  }

  get owners(): readonly string[] {
    return [...this.plans.keys()];
  }

  /** The merged parameters' scratch, beside the owners' statistics. */
  get workDir(): string {
    return join(this.root, 'merged');
  }

  /** Stores one owner's statistics (each tensor in its plan's dtype) under the plan's ids. */
  async add(plan: DisclosurePlan, tensors: ReadonlyMap<string, Float32Array | Float64Array>): Promise<void> {
    if (this.plans.has(plan.owner))
      throw new GramfuseError(ErrorCode.InvalidArgument, `owner ${plan.owner} contributed twice`, { facts: { owner: plan.owner } });
    const index = this.plans.size;
    const statistics = new Map<string, { statistic: PlannedStatistic; path: string; offset: number }>();
    for (const s of plan.statistics) {
      const values = tensors.get(s.id);
      if (values === undefined) throw new GramfuseError(ErrorCode.Internal, `statistic ${s.id} is in the plan but not among the tensors`);
      const typed =
        s.dtype === 'float32' ? (values instanceof Float32Array ? values : Float32Array.from(values)) : Float64Array.from(values);
      const path = this.file(index, s.id);
      await writeFileAtomic(path, typedArrayBytes(typed), 'writing merge scratch', true, false);
      statistics.set(s.id, { statistic: { ...s, bytes: typed.byteLength }, path, offset: 0 });
    }
    this.plans.set(plan.owner, statistics);
  }

  /** Where an owner's statistics.safetensors may be written (inside this directory, removed with it). */
  statisticsPath(owner: string): string {
    return join(this.root, 'owners', `${this.plans.size}-${statisticFile(owner)}.safetensors`);
  }

  /**
   * Takes an owner's statistics from a safetensors file in place (the collection's own output): nothing is copied;
   * each statistic must be there with the plan's dtype and shape.
   */
  async addSafetensors(plan: DisclosurePlan, path: string): Promise<void> {
    if (this.plans.has(plan.owner))
      throw new GramfuseError(ErrorCode.InvalidArgument, `owner ${plan.owner} contributed twice`, { facts: { owner: plan.owner } });
    const invalid = (reason: string): GramfuseError =>
      new GramfuseError(ErrorCode.InvalidData, `${path}: ${reason}`, { facts: { path, owner: plan.owner } });
    const { entries } = await readSafetensorsHeader(path, invalid);
    const statistics = new Map<string, { statistic: PlannedStatistic; path: string; offset: number }>();
    for (const s of plan.statistics) {
      const entry = entries.get(s.id);
      const dtype = s.dtype === 'float32' ? 'F32' : 'F64';
      if (entry === undefined) throw invalid(`statistic ${s.id} of the plan is missing`);
      if (entry.dtype !== dtype || entry.shape.join(',') !== s.shape.join(','))
        throw invalid(`statistic ${s.id} is ${entry.dtype}[${entry.shape.join(', ')}], the plan says ${dtype}[${s.shape.join(', ')}]`);
      statistics.set(s.id, { statistic: s, path, offset: entry.begin });
    }
    this.plans.set(plan.owner, statistics);
  }

  describe(owner: string, id: StatisticId): PlannedStatistic | undefined {
    return this.plans.get(owner)?.get(id)?.statistic;
  }

  async read(owner: string, id: StatisticId, start: number, length: number): Promise<Float32Array | Float64Array> {
    const entry = this.plans.get(owner)?.get(id);
    if (entry === undefined) throw new GramfuseError(ErrorCode.Internal, `no statistic ${id} from ${owner}`);
    const width = entry.statistic.dtype === 'float32' ? 4 : 8;
    const buffer = new ArrayBuffer(length * width);
    const path = entry.path;
    try {
      const handle = await open(path, 'r');
      try {
        const { bytesRead } = await handle.read(new Uint8Array(buffer), 0, buffer.byteLength, entry.offset + start * width);
        if (bytesRead !== buffer.byteLength) throw new GramfuseError(ErrorCode.Internal, `${path}: shorter than its statistic ${id}`);
      } finally {
        await handle.close();
      }
    } catch (error) {
      if (error instanceof GramfuseError) throw error;
      throw fileError(error, path, 'reading merge scratch');
    }
    return width === 4 ? new Float32Array(buffer) : new Float64Array(buffer);
  }

  async remove(): Promise<void> {
    await rm(this.root, { recursive: true, force: true });
  }

  private file(index: number, id: string): string {
    return join(this.root, 'owners', String(index), `${statisticFile(id)}.bin`);
  }
}
