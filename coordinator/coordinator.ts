import { createHash } from 'node:crypto';
import { appendFile } from 'node:fs/promises';

import {
  addContribution,
  analyzeModel,
  BundleManifest,
  contributionFromTensors,
  createOrtSolver,
  emptyAggregate,
  ErrorCode,
  FileLedger,
  finishParameters,
  formatMergeReport,
  generateSigningKeys,
  GramfuseError,
  type JobSpec,
  type JobState,
  listParameters,
  loadModel,
  type MergeReport,
  type ModelAnalysis,
  type OnnxModel,
  packageVersion,
  parseJobSpec,
  planDisclosure,
  readParameterValues,
  saveModel,
  signFields,
  type SigningKeys,
  solveRegMean,
  toGramfuseError,
  withParameterValues,
  writeSafetensors,
} from '../shared/index.js';
import { FileStore, statisticFile } from './store.js';

/** A statistic chunk as the coordinator sees it (converted from the wire message in server.ts). */
export interface ChunkIn {
  readonly jobId: string;
  readonly statisticId: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly packing: string;
  readonly index: number;
  readonly count: number;
  readonly offset: number;
  readonly data: Uint8Array;
  readonly sha256: string;
}

export interface ReceiptFields {
  readonly jobId: string;
  readonly owner: string;
  readonly statisticId: string;
  readonly sha256: string;
  readonly bytes: number;
  readonly committedAt: string;
}

export interface Receipt extends ReceiptFields {
  readonly signature: string;
}

export interface JobView {
  readonly spec: JobSpec;
  readonly state: JobState;
  readonly fingerprint: string;
  readonly completed: readonly string[];
  readonly quorum: number;
  readonly failure?: { readonly code: string; readonly message: string };
  readonly result?: { readonly sha256: string; readonly bytes: number };
  readonly receiptPublicKey: string;
}

interface PersistedState {
  state: JobState;
  /** The identity that created the job: it may watch and download results too. */
  createdBy?: string;
  completed: string[];
  failure?: { code: string; message: string };
  result?: { sha256: string; bytes: number };
  evaluations: { owner: string; examples: number; accuracy: number; macroF1: number; at: string }[];
}

interface Job {
  spec: JobSpec;
  fingerprint: string;
  template: OnnxModel;
  analysis: ModelAnalysis;
  persisted: PersistedState;
  manifests: Map<string, BundleManifest>;
  /** owner → statistic id → held chunk indices */
  held: Map<string, Map<string, Set<number>>>;
  committed: Map<string, Map<string, Receipt>>;
  uploadedBytes: number;
  listeners: Set<() => void>;
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** A job's in-memory record: what was loaded or created, with nothing uploaded yet. */
function newJob(spec: JobSpec, template: OnnxModel, analysis: ModelAnalysis, persisted: PersistedState): Job {
  return {
    spec,
    fingerprint: analysis.fingerprint,
    template,
    analysis,
    persisted,
    manifests: new Map(),
    held: new Map(),
    committed: new Map(),
    uploadedBytes: 0,
    listeners: new Set(),
  };
}

export interface CoordinatorOptions {
  /** Identities allowed to create jobs; default any authenticated identity. */
  readonly creators?: readonly string[];
  /** The coordinator's own identity in audit records. Default `coordinator`. */
  readonly identity?: string;
  readonly log?: (line: string) => void;
}

/**
 * The coordinator's job logic, independent of gRPC: durable jobs, verified chunk uploads, signed
 * receipts, aggregation and the RegMean solve. State lives in a FileStore; a restarted coordinator
 * reloads it and continues without asking for committed statistics again.
 */
export class Coordinator {
  private readonly jobs = new Map<string, Job>();
  private keys!: SigningKeys;
  /** The coordinator's audit ledger (state dir/audit.jsonl): everything it received and produced. */
  ledger!: FileLedger;
  private readonly solving = new Map<string, Promise<void>>();

  private constructor(
    readonly store: FileStore,
    private readonly options: CoordinatorOptions,
  ) {}

  static async open(stateDir: string, options: CoordinatorOptions = {}): Promise<Coordinator> {
    const coordinator = new Coordinator(new FileStore(stateDir), options);
    await coordinator.load();
    return coordinator;
  }

  private log(line: string): void {
    this.options.log?.(line);
  }

  private async load(): Promise<void> {
    const keys = await this.store.readJson<SigningKeys>(['keys', 'receipts.json']);
    if (keys === undefined) {
      this.keys = generateSigningKeys();
      await this.store.write(['keys', 'receipts.json'], JSON.stringify(this.keys));
    } else this.keys = keys;
    this.ledger = await FileLedger.open(this.store.path('audit.jsonl'), this.keys, this.options.identity ?? 'coordinator', (line) =>
      this.log(line),
    );
    for (const id of await this.store.list(['jobs'])) {
      const spec = parseJobSpec(await this.store.readJson(['jobs', id, 'spec.json']), `job ${id}`);
      const template = await loadModel(this.store.path('jobs', id, 'template.onnx'));
      const analysis = await analyzeModel(template);
      const persisted = (await this.store.readJson<PersistedState>(['jobs', id, 'state.json']))!;
      const job = newJob(spec, template, analysis, persisted);
      for (const owner of await this.store.list(['jobs', id, 'owners'])) {
        const manifest = await this.store.readJson<BundleManifest>(['jobs', id, 'owners', owner, 'manifest.json']);
        if (manifest !== undefined) job.manifests.set(owner, manifest);
        const receipts = (await this.store.read(['jobs', id, 'owners', owner, 'receipts.jsonl']))?.toString('utf8') ?? '';
        const committed = new Map<string, Receipt>();
        for (const line of receipts.split('\n')) {
          if (line.trim() === '') continue;
          const receipt = JSON.parse(line) as Receipt;
          committed.set(receipt.statisticId, receipt);
          job.uploadedBytes += receipt.bytes;
        }
        job.committed.set(owner, committed);
        const held = new Map<string, Set<number>>();
        for (const s of manifest?.plan.statistics ?? []) {
          const chunks = await this.store.list(['jobs', id, 'owners', owner, 'chunks', statisticFile(s.id)]);
          if (chunks.length > 0) held.set(s.id, new Set(chunks.map(Number)));
        }
        job.held.set(owner, held);
      }
      this.jobs.set(id, job);
      this.log(`loaded job ${id} (${persisted.state}, ${persisted.completed.length} owners complete)`);
      if (persisted.state === 'solving') void this.solve(id);
    }
  }

  private job(id: string): Job {
    const job = this.jobs.get(id);
    if (job === undefined)
      throw new GramfuseError(ErrorCode.JobNotFound, `job ${id}: no such job on this coordinator`, { facts: { job: id } });
    return job;
  }

  view(id: string): JobView {
    const job = this.job(id);
    return {
      spec: job.spec,
      state: job.persisted.state,
      fingerprint: job.fingerprint,
      completed: job.persisted.completed,
      quorum: job.spec.quorum ?? job.spec.participants.length,
      receiptPublicKey: this.keys.publicKeyPem,
      ...(job.persisted.failure === undefined ? {} : { failure: job.persisted.failure }),
      ...(job.persisted.result === undefined ? {} : { result: job.persisted.result }),
    };
  }

  list(): JobView[] {
    return [...this.jobs.keys()].map((id) => this.view(id));
  }

  /** Calls `listener` on every change of the job until the returned function is called. */
  watch(id: string, listener: () => void): () => void {
    const job = this.job(id);
    job.listeners.add(listener);
    return () => job.listeners.delete(listener);
  }

  private async persist(id: string): Promise<void> {
    const job = this.job(id);
    await this.store.write(['jobs', id, 'state.json'], JSON.stringify(job.persisted, null, 2));
    for (const listener of job.listeners) listener();
  }

  async createJob(identity: string, specValue: unknown, templateSource: Uint8Array | string): Promise<JobView> {
    if (this.options.creators !== undefined && !this.options.creators.includes(identity)) {
      throw new GramfuseError(
        ErrorCode.NotAuthorized,
        `${identity} may not create jobs on this coordinator (creators: ${this.options.creators.join(', ')})`,
        { facts: { identity } },
      );
    }
    const spec = parseJobSpec(specValue, 'job spec');
    const template = await loadModel(templateSource);
    const analysis = await analyzeModel(template);
    if (spec.fingerprint !== undefined && spec.fingerprint !== analysis.fingerprint) {
      throw new GramfuseError(
        ErrorCode.FingerprintMismatch,
        `job spec fingerprint ${spec.fingerprint} is not the template's ${analysis.fingerprint}`,
        { facts: { job: spec.id } },
      );
    }
    const existing = this.jobs.get(spec.id);
    if (existing !== undefined) {
      if (JSON.stringify(existing.spec) === JSON.stringify(spec) && existing.fingerprint === analysis.fingerprint)
        return this.view(spec.id);
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        `job ${spec.id} already exists with a different spec or template; choose another id`,
        { facts: { job: spec.id } },
      );
    }
    // A template named by path may keep tensors in side files: saveModel copies them into the job's directory.
    if (typeof templateSource === 'string') {
      await this.store.directory(['jobs', spec.id]);
      await saveModel(template, this.store.path('jobs', spec.id, 'template.onnx'));
    } else {
      await this.store.write(['jobs', spec.id, 'template.onnx'], templateSource);
    }
    const templateBytes = (await this.store.read(['jobs', spec.id, 'template.onnx']))!;
    await this.store.write(['jobs', spec.id, 'spec.json'], JSON.stringify(spec, null, 2));
    const persisted: PersistedState = { state: 'open', createdBy: identity, completed: [], evaluations: [] };
    this.jobs.set(spec.id, newJob(spec, { ...template, source: `job ${spec.id} template` }, analysis, persisted));
    await this.persist(spec.id);
    await this.ledger.append('job.created', spec.id, {
      createdBy: identity,
      spec,
      fingerprint: analysis.fingerprint,
      templateSha256: sha256(templateBytes),
    });
    this.log(`job ${spec.id} created by ${identity}: ${spec.participants.length} participants, ${spec.merge.method}`);
    return this.view(spec.id);
  }

  private participant(job: Job, identity: string): void {
    if (!job.spec.participants.includes(identity)) {
      throw new GramfuseError(ErrorCode.NotAuthorized, `${identity} is not a participant of job ${job.spec.id}`, {
        facts: { identity, job: job.spec.id },
      });
    }
  }

  private accepting(job: Job): void {
    if (job.persisted.state !== 'open' && job.persisted.state !== 'collecting') {
      throw new GramfuseError(ErrorCode.JobClosed, `job ${job.spec.id} is ${job.persisted.state} and accepts no more statistics`, {
        facts: { job: job.spec.id, state: job.persisted.state },
      });
    }
  }

  /** Registers an owner's manifest after checking it against what the template allows. */
  async join(
    identity: string,
    jobId: string,
    fingerprintValue: string,
    manifestJson: string,
  ): Promise<Map<string, { held: number[]; committed: boolean }>> {
    const job = this.job(jobId);
    this.participant(job, identity);
    this.accepting(job);
    if (fingerprintValue !== job.fingerprint) {
      throw new GramfuseError(
        ErrorCode.FingerprintMismatch,
        `${identity}'s model has fingerprint ${fingerprintValue}, the job's template ${job.fingerprint}`,
        { facts: { identity, job: jobId } },
      );
    }
    let manifest: BundleManifest;
    try {
      manifest = BundleManifest.parse(JSON.parse(manifestJson));
    } catch (error) {
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        `${identity}: the manifest is not a valid statistics manifest (${(error as Error).message.slice(0, 300)})`,
        { facts: { identity } },
      );
    }
    const plan = manifest.plan;
    if (plan.owner !== identity)
      throw new GramfuseError(ErrorCode.UploadInvalid, `manifest owner ${plan.owner} is not the caller ${identity}`, {
        facts: { identity },
      });
    const m = job.spec.merge;
    if (
      plan.spec.method !== m.method ||
      plan.spec.alpha !== m.alpha ||
      plan.spec.weighting !== m.weighting ||
      plan.spec.includePadding !== m.includePadding
    ) {
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        `${identity}: statistics were collected with ${JSON.stringify(plan.spec)}, the job needs ${JSON.stringify(m)}`,
        { facts: { identity } },
      );
    }
    // The template decides which statistics may exist, with which shapes: an agent cannot send a tensor the model does not have.
    const expected = new Map(
      planDisclosure(identity, job.analysis, job.spec.merge, 'float64', job.spec.policy).statistics.map((s) => [s.id, s]),
    );
    for (const s of plan.statistics) {
      const e = expected.get(s.id);
      if (e === undefined)
        throw new GramfuseError(ErrorCode.UploadInvalid, `${identity}: statistic ${s.id} is not in the job's template`, {
          facts: { identity, statistic: s.id },
        });
      if (e.shape.join(',') !== s.shape.join(',') || (s.kind === 'count' && s.dtype !== 'float64')) {
        throw new GramfuseError(
          ErrorCode.UploadInvalid,
          `${identity}: statistic ${s.id} has shape [${s.shape.join(', ')}], the template needs [${e.shape.join(', ')}]`,
          { facts: { identity, statistic: s.id } },
        );
      }
      if (s.sha256 === undefined)
        throw new GramfuseError(ErrorCode.UploadInvalid, `${identity}: statistic ${s.id} has no SHA-256 in the manifest`, {
          facts: { statistic: s.id },
        });
      if (s.kind === 'gram' && (s.rows ?? 0) < job.spec.policy.minRowsPerGroup) {
        throw new GramfuseError(
          ErrorCode.PolicyViolation,
          `${identity}: ${s.id} comes from ${s.rows ?? 0} rows, the job's policy needs ${job.spec.policy.minRowsPerGroup}`,
          { facts: { statistic: s.id } },
        );
      }
    }
    if (plan.statistics.length !== expected.size)
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        `${identity}: the manifest lists ${plan.statistics.length} statistics, the job needs ${expected.size}`,
        { facts: { identity } },
      );
    const total = plan.statistics.reduce((s, x) => s + x.bytes, 0);
    const previous = job.manifests.get(identity);
    if (previous !== undefined && JSON.stringify(previous.plan.statistics) !== JSON.stringify(plan.statistics)) {
      if ((job.committed.get(identity)?.size ?? 0) > 0) {
        throw new GramfuseError(
          ErrorCode.UploadInvalid,
          `${identity} already committed statistics of job ${jobId} under another manifest; a committed statistic cannot be replaced`,
          { facts: { identity } },
        );
      }
      await this.store.remove(['jobs', jobId, 'owners', identity, 'chunks']);
      job.held.set(identity, new Map());
    }
    if (previous === undefined && job.uploadedBytes + total > job.spec.limits.maxJobBytes) {
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        `job ${jobId}: ${total} more bytes would pass the job's budget of ${job.spec.limits.maxJobBytes}`,
        { facts: { job: jobId } },
      );
    }
    job.manifests.set(identity, manifest);
    await this.store.write(['jobs', jobId, 'owners', identity, 'manifest.json'], JSON.stringify(manifest));
    if (!job.held.has(identity)) job.held.set(identity, new Map());
    if (!job.committed.has(identity)) job.committed.set(identity, new Map());
    if (job.persisted.state === 'open') {
      job.persisted.state = 'collecting';
      await this.persist(jobId);
    }
    return this.uploadState(identity, jobId);
  }

  uploadState(identity: string, jobId: string): Map<string, { held: number[]; committed: boolean }> {
    const job = this.job(jobId);
    this.participant(job, identity);
    const out = new Map<string, { held: number[]; committed: boolean }>();
    const manifest = job.manifests.get(identity);
    for (const s of manifest?.plan.statistics ?? []) {
      out.set(s.id, {
        held: [...(job.held.get(identity)?.get(s.id) ?? [])].sort((a, b) => a - b),
        committed: job.committed.get(identity)?.has(s.id) ?? false,
      });
    }
    return out;
  }

  /** Verifies and stores one chunk; commits the statistic (and returns its receipt) once all chunks verify. */
  async acceptChunk(identity: string, chunk: ChunkIn): Promise<{ receipt?: Receipt; skipped: boolean }> {
    const job = this.job(chunk.jobId);
    this.participant(job, identity);
    const existing = job.committed.get(identity)?.get(chunk.statisticId);
    if (existing !== undefined) return { receipt: existing, skipped: true }; // idempotent replay
    this.accepting(job);
    const manifest = job.manifests.get(identity);
    if (manifest === undefined)
      throw new GramfuseError(ErrorCode.UploadInvalid, `${identity} must join job ${chunk.jobId} (send its manifest) before uploading`, {
        facts: { identity },
      });
    const planned = manifest.plan.statistics.find((s) => s.id === chunk.statisticId);
    if (planned === undefined)
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        `statistic ${chunk.statisticId} is not in ${identity}'s manifest (nor the template)`,
        { facts: { statistic: chunk.statisticId } },
      );
    if (planned.dtype !== chunk.dtype || planned.shape.join(',') !== chunk.shape.join(',')) {
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        `chunk of ${chunk.statisticId}: ${chunk.dtype}[${chunk.shape.join(', ')}] disagrees with the manifest's ${planned.dtype}[${planned.shape.join(', ')}]`,
        { facts: { statistic: chunk.statisticId } },
      );
    }
    if (
      chunk.data.byteLength > job.spec.limits.maxChunkBytes ||
      chunk.offset + chunk.data.byteLength > planned.bytes ||
      chunk.index >= chunk.count ||
      chunk.count < 1
    ) {
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        `chunk ${chunk.index}/${chunk.count} of ${chunk.statisticId}: bytes ${chunk.offset}..${chunk.offset + chunk.data.byteLength} do not fit the statistic's ${planned.bytes} bytes`,
        { facts: { statistic: chunk.statisticId } },
      );
    }
    if (sha256(chunk.data) !== chunk.sha256) {
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        `chunk ${chunk.index} of ${chunk.statisticId} fails its SHA-256 check; it was not stored (resend it)`,
        { facts: { statistic: chunk.statisticId, index: chunk.index } },
      );
    }
    const dir = ['jobs', chunk.jobId, 'owners', identity, 'chunks', statisticFile(chunk.statisticId)];
    const held = job.held.get(identity)!;
    let whole: Buffer;
    if (chunk.count === 1) {
      // A one-chunk statistic is verified and committed directly: one durable write instead of two.
      whole = Buffer.from(chunk.data.buffer, chunk.data.byteOffset, chunk.data.byteLength);
    } else {
      await this.store.write([...dir, String(chunk.index)], chunk.data);
      let indices = held.get(chunk.statisticId);
      if (indices === undefined) held.set(chunk.statisticId, (indices = new Set()));
      indices.add(chunk.index);
      if (indices.size < chunk.count) return { skipped: false };
      // Every chunk is here: assemble, verify against the manifest's digest, commit.
      const parts: Buffer[] = [];
      for (let i = 0; i < chunk.count; i++) parts.push((await this.store.read([...dir, String(i)]))!);
      whole = Buffer.concat(parts);
    }
    if (whole.byteLength !== planned.bytes || sha256(whole) !== planned.sha256) {
      await this.store.remove(dir);
      held.delete(chunk.statisticId);
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        `statistic ${chunk.statisticId} assembled from ${chunk.count} chunks does not match its manifest digest; its chunks were discarded (resend)`,
        { facts: { statistic: chunk.statisticId } },
      );
    }
    await this.store.write(['jobs', chunk.jobId, 'owners', identity, 'committed', `${statisticFile(chunk.statisticId)}.bin`], whole);
    const fields: ReceiptFields = {
      jobId: chunk.jobId,
      owner: identity,
      statisticId: chunk.statisticId,
      sha256: planned.sha256,
      bytes: planned.bytes,
      committedAt: new Date().toISOString(),
    };
    const receipt: Receipt = { ...fields, signature: signFields({ ...fields }, this.keys.privateKeyPem) };
    const receiptsPath = this.store.path('jobs', chunk.jobId, 'owners', identity, 'receipts.jsonl');
    await appendFile(receiptsPath, `${JSON.stringify(receipt)}\n`);
    job.committed.get(identity)!.set(chunk.statisticId, receipt);
    await this.ledger.append('statistic.committed', chunk.jobId, {
      owner: identity,
      statistic: planned.id,
      kind: planned.kind,
      tensors: planned.tensors,
      shape: planned.shape,
      dtype: planned.dtype,
      bytes: planned.bytes,
      rows: planned.rows ?? null,
      sha256: planned.sha256,
    });
    await this.ledger.append('receipt.issued', chunk.jobId, {
      owner: identity,
      statistic: planned.id,
      sha256: planned.sha256,
      bytes: planned.bytes,
      committedAt: receipt.committedAt,
      signature: receipt.signature,
    });
    job.uploadedBytes += planned.bytes;
    if (chunk.count > 1) await this.store.remove(dir);
    held.delete(chunk.statisticId);
    if (job.committed.get(identity)!.size === manifest.plan.statistics.length && !job.persisted.completed.includes(identity)) {
      job.persisted.completed.push(identity);
      this.log(
        `job ${chunk.jobId}: ${identity} complete (${job.persisted.completed.length}/${job.spec.quorum ?? job.spec.participants.length})`,
      );
      await this.persist(chunk.jobId);
      if (job.persisted.completed.length >= (job.spec.quorum ?? job.spec.participants.length)) void this.solve(chunk.jobId);
    }
    return { receipt, skipped: false };
  }

  /** Aggregates the committed statistics of the completed owners, solves, and writes the result. */
  solve(jobId: string): Promise<void> {
    const running = this.solving.get(jobId);
    if (running !== undefined) return running;
    const promise = this.runSolve(jobId).finally(() => this.solving.delete(jobId));
    this.solving.set(jobId, promise);
    return promise;
  }

  /** Waits for solves in flight (a draining server must not stop mid-write). */
  async drain(): Promise<void> {
    await Promise.all([...this.solving.values()]);
  }

  private async runSolve(jobId: string): Promise<void> {
    const job = this.job(jobId);
    try {
      job.persisted.state = 'solving';
      await this.persist(jobId);
      const started = performance.now();
      const aggregate = emptyAggregate(job.fingerprint);
      const owners: MergeReport['owners'][number][] = [];
      for (const owner of [...job.persisted.completed].sort()) {
        const manifest = job.manifests.get(owner)!;
        const tensors = new Map<string, Float64Array>();
        for (const s of manifest.plan.statistics) {
          // A copy into its own (aligned) buffer: the file's Buffer may sit at any offset of Node's pool.
          const bytes = new Uint8Array(
            (await this.store.read(['jobs', jobId, 'owners', owner, 'committed', `${statisticFile(s.id)}.bin`]))!,
          );
          tensors.set(
            s.id,
            s.dtype === 'float32'
              ? Float64Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4))
              : new Float64Array(bytes.buffer),
          );
        }
        const contribution = contributionFromTensors(manifest.plan, tensors);
        addContribution(aggregate, contribution);
        owners.push({
          name: owner,
          model: `agent ${owner}`,
          data: null,
          examples: contribution.examples,
          tokens: contribution.tokens,
          rows: contribution.rows,
        });
      }
      const spec = job.spec.merge;
      const values = finishParameters(aggregate, spec, undefined);
      let layers: MergeReport['layers'] = [];
      if (spec.method === 'regmean') {
        const solver = await createOrtSolver();
        try {
          const solved = await solveRegMean(aggregate, job.analysis, solver);
          for (const [name, v] of solved.values) values.set(name, v);
          layers = solved.layers;
        } finally {
          await solver.release();
        }
      }
      const solveSeconds = (performance.now() - started) / 1000;
      const merged = withParameterValues(job.template, values);
      await this.store.directory(['jobs', jobId, 'result']);
      const modelPath = this.store.path('jobs', jobId, 'result', 'merged.onnx');
      await saveModel(merged, modelPath);
      const modelBytes = (await this.store.read(['jobs', jobId, 'result', 'merged.onnx']))!;
      const params = listParameters(job.template);
      await writeSafetensors(
        this.store.path('jobs', jobId, 'result', 'merged.safetensors'),
        params.map((p) => ({
          name: p.name,
          dtype: 'F32' as const,
          shape: p.shape,
          data: Float32Array.from(values.get(p.name) ?? readParameterValues(job.template, p.name)),
        })),
        { method: spec.method, fingerprint: job.fingerprint, job: jobId },
      );
      const solvedNames = new Set(layers.flatMap((l) => l.weights));
      const report: MergeReport = {
        tool: { name: 'gramfuse', version: packageVersion() },
        createdAt: new Date().toISOString(),
        spec,
        template: `job ${jobId} template`,
        fingerprint: job.fingerprint,
        base: null,
        owners,
        layers,
        averaged: params.map((p) => p.name).filter((n) => !solvedNames.has(n)),
        seconds: { collect: 0, solve: solveSeconds, write: 0, total: solveSeconds },
        peakRssMb: process.resourceUsage().maxRSS / 1024,
        outputs: { model: 'merged.onnx', modelSha256: sha256(modelBytes), safetensors: 'merged.safetensors', report: 'report.json' },
      };
      await this.store.write(['jobs', jobId, 'result', 'report.json'], `${JSON.stringify(report, null, 2)}\n`);
      await this.store.write(['jobs', jobId, 'result', 'report.txt'], `${formatMergeReport(report)}\n`);
      job.persisted.state = 'done';
      job.persisted.result = { sha256: sha256(modelBytes), bytes: modelBytes.byteLength };
      await this.ledger.append('solve.done', jobId, {
        owners: [...job.persisted.completed].sort().map((owner) => ({
          owner,
          statistics: [...(job.committed.get(owner)?.values() ?? [])].map((r) => ({ id: r.statisticId, sha256: r.sha256 })),
        })),
        mergedModelSha256: sha256(modelBytes),
        reportSha256: sha256(Buffer.from(`${JSON.stringify(report, null, 2)}\n`)),
        method: spec.method,
      });
      await this.persist(jobId);
      this.log(`job ${jobId}: solved in ${solveSeconds.toFixed(2)} s, merged model sha256 ${job.persisted.result.sha256.slice(0, 16)}…`);
    } catch (error) {
      const coded = toGramfuseError(error);
      job.persisted.state = 'failed';
      job.persisted.failure = { code: coded.code, message: coded.message };
      await this.persist(jobId).catch(() => undefined);
      await this.ledger.append('job.failed', jobId, { code: coded.code, message: coded.message }).catch(() => undefined);
      this.log(`job ${jobId}: failed: ${coded.toLine()}`);
    }
  }

  /** A result artifact of a solved job. */
  async artifact(identity: string, jobId: string, name: string): Promise<Buffer> {
    const job = this.job(jobId);
    if (identity !== job.persisted.createdBy) this.participant(job, identity);
    if (job.persisted.state !== 'done')
      throw new GramfuseError(ErrorCode.JobClosed, `job ${jobId} is ${job.persisted.state}; its result is not ready`, {
        facts: { job: jobId },
      });
    if (!['merged.onnx', 'merged.safetensors', 'report.json'].includes(name))
      throw new GramfuseError(ErrorCode.InvalidArgument, `no artifact ${name}; choose merged.onnx, merged.safetensors or report.json`);
    const bytes = (await this.store.read(['jobs', jobId, 'result', name]))!;
    await this.ledger.append('result.fetched', jobId, { by: identity, artifact: name, sha256: sha256(bytes), bytes: bytes.byteLength });
    return bytes;
  }

  async recordEvaluation(identity: string, jobId: string, metrics: { examples: number; accuracy: number; macroF1: number }): Promise<void> {
    const job = this.job(jobId);
    this.participant(job, identity);
    job.persisted.evaluations.push({ owner: identity, ...metrics, at: new Date().toISOString() });
    await this.persist(jobId);
    await this.ledger.append('evaluation.reported', jobId, { owner: identity, ...metrics });
  }
}
