import { ErrorCode, GramfuseError, toGramfuseError, failpoint } from '../../shared/index.js';
import { FileLedger } from '../../shared/audit/index.js';
import { type EventBus, InProcessBus, type JobEvent } from '../../shared/events/index.js';
import { type JobState, type Receipt, type ReceiptFields, type StatisticChunk } from '../../shared/federation/index.js';
import { type SigningKeys, signingKeysAt } from '../../shared/security/index.js';
import { admitManifest, checkChunk, checkJobBudget, type CommitBatch, storeChunk } from '../intake/index.js';
// auth.ts is a leaf (it imports only shared/): the facade authorizes every call in one place, the servicer too.
import { authorize, type JobAccess } from '../server/auth.js';
import { type AnswerHeader, type AnswerReply, NatsSolveExecutor, Slots, type SolveExecutor, workerThreadExecutor } from '../solve/index.js';
import { FileStore } from '../store/index.js';
import { commitEntries } from './commit.js';
import type { JobContext } from './context.js';
import { prepareJob } from './creation.js';
import { scheduleDeadline } from './deadline.js';
import { evaluationProblems } from './evaluation.js';
import { checkTransition } from './lifecycle.js';
import { readJob, resumeJob } from './loading.js';
import { ledgeredCommits } from './recovery.js';
import { type Job, jobAccess, type JobView, jobView, newJob, type PersistedState } from './job.js';
import { runSolve } from './solve-run.js';
import { SecureRounds } from './secure-rounds.js';
import type { AdvertiseBody, ConfirmBody, RevealBody, RoundView, ShareBody } from '../../shared/secure-aggregation/index.js';

/** A statistic chunk as the coordinator sees it (converted from the wire message in server/wire.ts). */
export type ChunkIn = StatisticChunk;
export type { Receipt, ReceiptFields };

export interface CoordinatorOptions {
  /** Identities allowed to create jobs (`authorize`, job.create). @default [] (nobody: list them with --creators) */
  readonly creators?: readonly string[];
  /**
   * Directories whose files a job creator may name as a template (`templatePath`) instead of sending its
   * bytes: for large models with external data. @default [] (templates only as bytes)
   */
  readonly templateDirs?: readonly string[];
  /** Jobs one creator may have open (not done or failed) at once; more is RESOURCE_EXHAUSTED. @default 16 */
  readonly maxOpenJobsPerCreator?: number;
  /** Solves run at once; later ones wait their turn (each holds a Gram group and the model in memory). @default 1 */
  readonly maxConcurrentSolves?: number;
  /** Where solves run. @default workerThreadExecutor (a worker thread of this process) */
  readonly solveExecutor?: SolveExecutor;
  /** Identities of solver workers (`gramfuse solver serve`) allowed to fetch sums and submit solutions. @default [] */
  readonly solverIdentities?: readonly string[];
  /** Read-only identities (auditors, `gramfuse dashboard`): every job's status and report.json, nothing else. @default [] */
  readonly observers?: readonly string[];
  /** The coordinator's own identity in audit records. Default `coordinator`. */
  readonly identity?: string;
  readonly log?: (line: string) => void;
  /** Where control-plane events go besides the coordinator's own in-process bus (e.g. NATS). */
  readonly events?: EventBus;
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
  /** Jobs whose state could not be loaded: reported with STATE_CORRUPT, never touched. */
  private readonly quarantined = new Map<string, GramfuseError>();
  private readonly solveSlots: Slots;
  private readonly executor: SolveExecutor;
  /** Control-plane events (DESIGN.md §6): the gRPC Watch follows this bus; `options.events` gets a copy. */
  readonly events = new InProcessBus();
  /** The SecAgg+ rounds of secure jobs (privacy.secureAggregation). */
  private secure!: SecureRounds;

  private constructor(
    readonly store: FileStore,
    private readonly options: CoordinatorOptions,
  ) {
    this.solveSlots = new Slots(Math.max(1, options.maxConcurrentSolves ?? 1));
    this.executor = options.solveExecutor ?? workerThreadExecutor;
  }

  static async open(stateDir: string, options: CoordinatorOptions = {}): Promise<Coordinator> {
    const coordinator = new Coordinator(new FileStore(stateDir), options);
    await coordinator.load();
    return coordinator;
  }

  private log(line: string): void {
    this.options.log?.(line);
  }

  private lent?: JobContext;
  /** What the job pieces (commit, solve run) may use of the facade. */
  private context(): JobContext {
    this.lent ??= {
      store: this.store,
      ledger: this.ledger,
      keys: this.keys,
      log: (line) => this.log(line),
      emit: (job, type, data) => this.emit(job, type, data),
      persist: (id) => this.persist(id),
      transition: (id, state) => this.transition(id, state),
      fail: (id, error) => this.fail(id, error),
      solve: (id) => this.solve(id),
      scheduleDeadline: (id) => this.scheduleDeadline(id),
      secureCompleted: (id) => this.secure.ownerCompleted(id),
      secureSum: (id) => this.secure.summed(id),
    };
    return this.lent;
  }

  private async load(): Promise<void> {
    // The receipt signing key: 0600, refused when others can read it (KEY_FILE_EXPOSED).
    this.keys = await signingKeysAt(this.store.path('keys', 'receipts.json'), 'receipt signing key');
    this.ledger = await FileLedger.open(this.store.path('audit.jsonl'), this.keys, this.options.identity ?? 'coordinator', (line) =>
      this.log(line),
    );
    this.secure = new SecureRounds(this.context(), (id) => this.job(id));
    const ledgered = await ledgeredCommits(this.ledger);
    for (const id of await this.store.list(['jobs'])) {
      try {
        await this.loadJob(id, ledgered);
      } catch (error) {
        // One corrupt job must not keep the others from loading: it is set aside, and `job status` says why.
        const coded = toGramfuseError(error);
        const reason = new GramfuseError(
          ErrorCode.StateCorrupt,
          `job ${id} is quarantined: its state on the coordinator could not be loaded (${coded.code}: ${coded.message}); the operator must repair or remove jobs/${id} in the state directory`,
          { facts: { job: id, cause: coded.code } },
        );
        this.quarantined.set(id, reason);
        this.log(reason.message);
      }
    }
  }

  /** Loads one job from the state directory, mending what a stop left half done (jobs/loading.ts). */
  private async loadJob(id: string, ledgered: Set<string>): Promise<void> {
    const loaded = await readJob(this.context(), id, ledgered);
    if (loaded === undefined) return;
    this.jobs.set(id, loaded.job);
    if (loaded.job.spec.privacy.secureAggregation) await this.secure.load(loaded.job);
    await resumeJob(this.context(), loaded.job, loaded.recovered);
  }

  private job(id: string): Job {
    const quarantined = this.quarantined.get(id);
    if (quarantined !== undefined) throw quarantined;
    const job = this.jobs.get(id);
    if (job === undefined)
      throw new GramfuseError(ErrorCode.JobNotFound, `job ${id}: no such job on this coordinator`, { facts: { job: id } });
    return job;
  }

  view(id: string): JobView {
    const view = jobView(this.job(id), this.keys.publicKeyPem);
    const groups = this.executor instanceof NatsSolveExecutor ? this.executor.view(id) : [];
    return groups.length === 0 ? view : { ...view, solveGroups: groups };
  }

  /**
   * The distributed solve a solver worker may act on: the caller must be a listed solver, the job solving on this
   * coordinator with `--solvers nats`. A job already done answers `done` (a late answer is a duplicate); a failed one
   * is JOB_CLOSED (the worker drops the task).
   */
  private distributed(identity: string, jobId: string): NatsSolveExecutor | 'done' {
    const job = this.job(jobId);
    authorize(identity, 'solve.work', jobAccess(job), {
      creators: this.options.creators ?? [],
      solvers: this.options.solverIdentities ?? [],
    });
    if (!(this.executor instanceof NatsSolveExecutor))
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        'this coordinator solves in-process; start it with --solvers nats to use solver workers',
      );
    const state = job.persisted.state;
    if (state === 'done') return 'done';
    if (state !== 'solving')
      throw new GramfuseError(
        state === 'failed' ? ErrorCode.JobClosed : ErrorCode.Unavailable,
        `job ${jobId} is ${state}${state === 'failed' ? '; its solve tasks are void' : ', not solving yet; retry later'}`,
        { facts: { job: jobId, state } },
      );
    return this.executor;
  }

  /** A solver worker's FetchInput: where the task part lies (committed: the group needs no more answers). */
  solveInput(
    identity: string,
    jobId: string,
    group: string,
    part: string,
    sha256: string,
    delivery: { streamSequence: number; count: number },
  ): { path: string; bytes: number; committed: boolean; lease: string } {
    const executor = this.distributed(identity, jobId);
    return executor === 'done'
      ? { path: '', bytes: 0, committed: true, lease: '' }
      : executor.input(identity, jobId, group, part, sha256, delivery);
  }

  /** A solver worker's Submit header: a reply (duplicate, stale lease), or where its X goes and how long it must be. */
  beginAnswer(identity: string, header: AnswerHeader): AnswerReply | { path: string; bytes: number } {
    const executor = this.distributed(identity, header.jobId);
    return executor === 'done'
      ? { outcome: 'duplicate', reason: 'the job is done', relativeResidual: 0 }
      : executor.beginAnswer(identity, header);
  }

  /** A solver worker's error report for a task. */
  recordAnswerError(identity: string, header: AnswerHeader): AnswerReply {
    const executor = this.distributed(identity, header.jobId);
    return executor === 'done'
      ? { outcome: 'duplicate', reason: 'the job is done', relativeResidual: 0 }
      : executor.recordError(identity, header);
  }

  /** Checks a received answer and commits it once. */
  async settleAnswer(identity: string, header: AnswerHeader, answerPath: string): Promise<AnswerReply> {
    const executor = this.distributed(identity, header.jobId);
    return executor === 'done'
      ? { outcome: 'duplicate', reason: 'the job is done', relativeResidual: 0 }
      : executor.settle(identity, header, answerPath);
  }

  /** Who may do what on a job (for `authorize`); JOB_NOT_FOUND when there is no such job. */
  access(id: string): JobAccess {
    return jobAccess(this.job(id));
  }

  /** Chunks an agent may have unacknowledged on one of the job's upload streams (its spec's limits.uploadWindow). */
  uploadWindow(id: string): number {
    return this.job(id).spec.limits.uploadWindow;
  }

  list(): JobView[] {
    return [...this.jobs.keys()].map((id) => this.view(id));
  }

  /** Calls `listener` with each event of the job until the returned function is called. */
  async watch(id: string, listener: (event: JobEvent) => void): Promise<() => Promise<void>> {
    this.job(id);
    return this.events.subscribe(id, listener);
  }

  /** Publishes a control-plane event on the in-process bus and, when configured, on NATS (never failing the caller). */
  private emit(job: string, type: JobEvent['type'], data: Record<string, unknown>): void {
    const event: JobEvent = { job, type, time: new Date().toISOString(), data };
    void this.events.publish(event);
    this.options.events
      ?.publish(event)
      .catch((error: unknown) => this.log(`event ${type} of job ${job} not sent: ${(error as Error).message}`));
  }

  private async persist(id: string): Promise<void> {
    const job = this.job(id);
    await this.store.write(['jobs', id, 'state.json'], JSON.stringify(job.persisted, null, 2));
  }

  /** Moves a job to `state`, durably, and says so on the event bus. */
  private async transition(id: string, state: JobState): Promise<void> {
    const job = this.job(id);
    checkTransition(id, job.persisted.state, state);
    job.persisted.state = state;
    // Watchers hear of the change even when it cannot be written (a full disk): the error still reaches the caller.
    const written = await this.persist(id).then(
      () => undefined,
      (error: unknown) => error,
    );
    this.emit(id, 'state', {
      state,
      completed: job.persisted.completed.length,
      quorum: job.spec.quorum ?? job.spec.participants.length,
      ...(job.persisted.failure === undefined ? {} : { failure: job.persisted.failure }),
      ...(job.persisted.result === undefined ? {} : { result: job.persisted.result }),
    });
    if (written !== undefined) throw toGramfuseError(written);
  }

  async createJob(identity: string, specValue: unknown, templateSource: Uint8Array | string): Promise<JobView> {
    authorize(identity, 'job.create', undefined, { creators: this.options.creators ?? [] });
    const prepared = await prepareJob(this.store, this.jobs, identity, specValue, templateSource, {
      maxOpenJobsPerCreator: this.options.maxOpenJobsPerCreator ?? 16,
      templateDirs: this.options.templateDirs ?? [],
    });
    if (prepared.kind === 'existing') return this.view(prepared.id);
    const { spec, analysis, templateSha256 } = prepared;
    const persisted: PersistedState = { state: 'open', createdBy: identity, completed: [], evaluations: [] };
    this.jobs.set(spec.id, newJob(spec, analysis, persisted));
    await this.transition(spec.id, 'open');
    this.scheduleDeadline(spec.id);
    await this.ledger.append('job.created', spec.id, { createdBy: identity, spec, fingerprint: analysis.fingerprint, templateSha256 });
    this.log(`job ${spec.id} created by ${identity}: ${spec.participants.length} participants, ${spec.merge.method}`);
    return this.view(spec.id);
  }

  private scheduleDeadline(id: string): void {
    scheduleDeadline(this.job(id), (error) => this.fail(id, error));
  }

  private async fail(id: string, cause: Error): Promise<void> {
    const error = toGramfuseError(cause);
    const job = this.job(id);
    job.persisted.failure = { code: error.code, message: error.message };
    // Recorded first, so whoever sees the state change finds the record.
    await this.ledger.append('job.failed', id, { code: error.code, message: error.message }).catch(() => undefined);
    await this.transition(id, 'failed').catch(() => undefined);
    this.log(`job ${id}: failed: ${error.toLine()}`);
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
  ): Promise<Map<string, { held: number[]; committed: boolean; receipt?: Receipt }>> {
    const job = this.job(jobId);
    this.participant(job, identity);
    this.accepting(job);
    if (job.spec.privacy.secureAggregation) this.secure.checkUpload(identity, jobId, job.persisted.completed.includes(identity));
    const manifest = admitManifest(identity, job.spec, job.analysis, fingerprintValue, manifestJson);
    const plan = manifest.plan;
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
      await this.store.remove(['jobs', jobId, 'owners', identity, 'partial']);
      job.held.set(identity, new Map());
    }
    // The budget counts every owner's declared bytes (a re-join replaces its own, it does not reset others'):
    // chunks must lie inside their statistics, so nothing held or committed can exceed it.
    const others = [...job.manifests]
      .filter(([owner]) => owner !== identity)
      .reduce((sum, [, m]) => sum + m.plan.statistics.reduce((s, x) => s + x.bytes, 0), 0);
    checkJobBudget(job.spec, identity, total, others);
    job.manifests.set(identity, manifest);
    await this.store.write(['jobs', jobId, 'owners', identity, 'manifest.json'], JSON.stringify(manifest));
    if (!job.held.has(identity)) job.held.set(identity, new Map());
    if (!job.committed.has(identity)) job.committed.set(identity, new Map());
    if (previous === undefined) this.emit(jobId, 'joined', { owner: identity, statistics: plan.statistics.length, bytes: total });
    if (job.persisted.state === 'open') await this.transition(jobId, 'collecting');
    return this.uploadState(identity, jobId);
  }

  /** What the coordinator holds of an owner's statistics: chunks held, and the receipt of each committed one. */
  async uploadState(identity: string, jobId: string): Promise<Map<string, { held: number[]; committed: boolean; receipt?: Receipt }>> {
    const job = this.job(jobId);
    this.participant(job, identity);
    await job.committing.get(identity)?.catch(() => undefined);
    const out = new Map<string, { held: number[]; committed: boolean; receipt?: Receipt }>();
    const manifest = job.manifests.get(identity);
    for (const s of manifest?.plan.statistics ?? []) {
      const receipt = job.committed.get(identity)?.get(s.id);
      out.set(s.id, {
        held: [...(job.held.get(identity)?.get(s.id) ?? [])].sort((a, b) => a - b),
        committed: receipt !== undefined,
        ...(receipt === undefined ? {} : { receipt }),
      });
    }
    return out;
  }

  /**
   * Verifies and stores one chunk. When the statistic's last chunk arrives, the assembled statistic is
   * checked against the manifest's digest and added to `batch`; `commit` makes the batch durable and
   * returns its receipts. A statistic already committed is skipped (idempotent replay).
   */
  async acceptChunk(identity: string, chunk: ChunkIn, batch: CommitBatch): Promise<{ receipt?: Receipt; skipped: boolean }> {
    const job = this.job(chunk.jobId);
    this.participant(job, identity);
    const existing = job.committed.get(identity)?.get(chunk.statisticId);
    if (existing !== undefined) return { receipt: existing, skipped: true }; // idempotent replay
    if (batch.has(chunk.jobId, chunk.statisticId)) return { skipped: true };
    this.accepting(job);
    const planned = checkChunk(identity, job.manifests.get(identity), chunk, job.spec.limits.maxChunkBytes);
    const committedFile = await storeChunk(this.store, job.held.get(identity)!, identity, chunk, planned);
    if (committedFile === undefined) return { skipped: false };
    failpoint('statistic.verified');
    batch.entries.push({ jobId: chunk.jobId, statistic: planned, file: committedFile });
    batch.bytes += planned.bytes;
    return { skipped: false };
  }

  /**
   * Commits the batch (a group commit): fsyncs its statistics, appends their signed receipts to the
   * owner's receipt log with one fsync (the commit point), records them in the audit ledger with one
   * fsync, and returns the receipts. A crash before the receipt log is written only means a resend.
   */
  commit(identity: string, batch: CommitBatch): Promise<Receipt[]> {
    const entries = batch.entries.splice(0);
    batch.bytes = 0;
    if (entries.length === 0) return Promise.resolve([]);
    const jobId = entries[0]!.jobId;
    const job = this.job(jobId);
    const previous = job.committing.get(identity) ?? Promise.resolve();
    const work = previous.catch(() => undefined).then(() => this.commitEntries(identity, job, entries));
    job.committing.set(identity, work);
    return work;
  }

  private commitEntries(identity: string, job: Job, entries: CommitBatch['entries']): Promise<Receipt[]> {
    return commitEntries(this.context(), identity, job, entries);
  }

  /** Secure aggregation, round 0: the caller's keys (checked against `certificatePem`, its mTLS certificate) and bounds. */
  secureAdvertise(identity: string, jobId: string, body: AdvertiseBody, certificatePem: string | undefined): Promise<RoundView> {
    this.participant(this.job(jobId), identity);
    return this.secure.advertise(identity, jobId, body, certificatePem);
  }

  /** Secure aggregation, round 1: the caller's sealed shares. */
  secureShare(identity: string, jobId: string, body: ShareBody): Promise<RoundView> {
    this.participant(this.job(jobId), identity);
    return this.secure.share(identity, jobId, body);
  }

  /** Secure aggregation, consistency: the caller's signature over the unmasking request it was shown. */
  secureConfirm(identity: string, jobId: string, body: ConfirmBody): Promise<RoundView> {
    this.participant(this.job(jobId), identity);
    return this.secure.confirm(identity, jobId, body);
  }

  /** Secure aggregation, unmasking: the caller's revealed shares. */
  secureReveal(identity: string, jobId: string, body: RevealBody): Promise<RoundView> {
    this.participant(this.job(jobId), identity);
    return this.secure.reveal(identity, jobId, body);
  }

  /** Secure aggregation: the round as the caller may see it. */
  secureRound(identity: string, jobId: string): RoundView {
    this.participant(this.job(jobId), identity);
    return this.secure.round(identity, jobId);
  }

  /** Aggregates the committed statistics of the completed owners, solves, and writes the result. */
  solve(jobId: string): Promise<void> {
    const running = this.solving.get(jobId);
    if (running !== undefined) return running;
    const promise = runSolve(this.context(), this.job(jobId), this.executor, this.solveSlots).finally(() => this.solving.delete(jobId));
    this.solving.set(jobId, promise);
    return promise;
  }

  /** Waits for solves in flight (a draining server must not stop mid-write). */
  async drain(): Promise<void> {
    await Promise.all([...this.solving.values()]);
  }

  /**
   * Where a solved job's result artifact lies, with its size and SHA-256 (read from the file a slice at a time):
   * the servicer streams it from there, so results of any size (past 2 GiB too) are never held in memory.
   */
  async artifactFile(identity: string, jobId: string, name: string): Promise<{ path: string; sha256: string; bytes: number }> {
    const job = this.job(jobId);
    // Observers read the report (diagnostics and digests), never the merged weights (auth.ts, report.read).
    const observer = name === 'report.json' && (this.options.observers ?? []).includes(identity);
    if (identity !== job.persisted.createdBy && !observer) this.participant(job, identity);
    if (job.persisted.state !== 'done')
      throw new GramfuseError(ErrorCode.JobClosed, `job ${jobId} is ${job.persisted.state}; its result is not ready`, {
        facts: { job: jobId },
      });
    const file = ['jobs', jobId, 'result', name];
    // merged.onnx.data exists for merged models past protobuf's 2 GB (their tensors' side file).
    const artifacts = ['merged.onnx', 'merged.safetensors', 'report.json', 'merged.onnx.data'];
    if (!artifacts.includes(name) || (name === 'merged.onnx.data' && !(await this.store.list(['jobs', jobId, 'result'])).includes(name)))
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        `job ${jobId} has no artifact ${name}; choose merged.onnx, merged.safetensors or report.json (and merged.onnx.data for models past 2 GB)`,
        { facts: { job: jobId, artifact: name } },
      );
    const { sha256, bytes } = await this.store.sha256(file);
    await this.ledger.append('result.fetched', jobId, { by: identity, artifact: name, sha256, bytes });
    return { path: this.store.path(...file), sha256, bytes };
  }

  async recordEvaluation(identity: string, jobId: string, metrics: { examples: number; accuracy: number; macroF1: number }): Promise<void> {
    const job = this.job(jobId);
    this.participant(job, identity);
    if (job.persisted.state !== 'done' || job.persisted.result === undefined)
      throw new GramfuseError(
        ErrorCode.JobClosed,
        `job ${jobId} is ${job.persisted.state}: an evaluation reports on its merged model, which it does not have yet`,
        {
          facts: { job: jobId },
        },
      );
    const problems = evaluationProblems(metrics);
    if (problems.length > 0)
      throw new GramfuseError(ErrorCode.InvalidArgument, `evaluation report for job ${jobId}: ${problems.join('; ')}`, {
        facts: { job: jobId },
      });
    job.persisted.evaluations.push({ owner: identity, ...metrics, at: new Date().toISOString() });
    await this.persist(jobId);
    await this.ledger.append('evaluation.reported', jobId, { owner: identity, model: job.persisted.result.sha256, ...metrics });
  }
}
