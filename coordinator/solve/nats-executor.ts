// `coordinator serve --solvers nats`: a job's Gram groups are solved by solver workers (`gramfuse solver serve`) that
// pull one task per group from the JetStream work queue GRAMFUSE_SOLVE, fetch the group's sums over gRPC, and submit
// X over gRPC. This executor prepares the tasks (sums on disk, digests in the descriptors), publishes them (message
// ids de-duplicate a restarted coordinator's second publish), checks and commits each answer once, fails the job
// when a task runs out of deliveries, and then runs the in-process pipeline, which finds every group committed and
// only averages the other parameters and writes the merged model. NATS carries descriptors, never matrices.
//
// Every solver, and every client of the queue, is taken to be hostile (docs/SECURITY.md): nothing a worker says about
// its delivery decides anything. Delivery counts come from JetStream (its MAX_DELIVERIES advisory); an answer is
// bound to one delivery by a lease nonce the coordinator hands out with the group's Σ G̃ (one answer per lease, a
// later fetch makes it stale); a task terminated by any client (MSG_TERMINATED advisory) or not answered within the
// per-group deadline is published again, a bounded number of times, then the job fails with a coded error.
import { randomBytes, randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';

import { jetstream, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';

import { callWorker, ErrorCode, failpoint, GramfuseError, PersistentWorker, toGramfuseError } from '../../shared/index.js';
import { statisticFile } from '../../shared/federation/index.js';
import {
  connectNats,
  ensureSolveQueue,
  MAX_DELIVERIES_ADVISORY,
  MSG_TERMINATED_ADVISORY,
  parseSolveAdvisory,
  SOLVE_STREAM,
  type SolveQueueSettings,
  solveSubject,
  type SolveTask,
  solveTaskId,
} from '../../shared/nats/index.js';
import type { NatsTarget } from '../../shared/nats/index.js';
import { workerThreadExecutor, type SolveExecutor } from './executor.js';
import { Slots } from './slots.js';
import type { SolveOutcome, SolveProgress, SolveRequest } from './solve-job.js';
import { type CheckOutcome, type CheckRequest, DEFAULT_RESIDUAL_TOLERANCE, type PreparedTasks, taskPartPath } from './tasks.js';
import type { TaskWorkerRequest } from './task-worker.js';

export type GroupTaskState = 'preparing' | 'queued' | 'fetching' | 'solving' | 'checking' | 'committed' | 'rejected' | 'failed';

/** One Gram group of a distributed solve, as `job status` shows it. */
export interface SolveGroupView {
  readonly group: string;
  readonly state: GroupTaskState;
  /** The solver identity that holds (or last held) the task; '' before any did. */
  readonly worker: string;
  /** Answers received (accepted or not) and error reports. */
  readonly attempts: number;
  readonly lastError: string;
}

/** A worker's answer as the servicer received it (the header of a Submit stream). */
export interface AnswerHeader {
  readonly jobId: string;
  readonly group: string;
  readonly gramSha256: string;
  readonly n: number;
  readonly rhs: number;
  readonly jitter: number;
  readonly conditionEstimate: number;
  readonly seconds: number;
  /** SHA-256 of X's bytes as the worker computed it. */
  readonly sha256: string;
  readonly device: string;
  readonly errorCode: string;
  readonly errorMessage: string;
  /** The worker's word for its delivery count and whether it was the last: logged, never acted on. */
  readonly delivery: number;
  readonly lastDelivery: boolean;
  /** The lease nonce the coordinator handed out with this delivery's Σ G̃. */
  readonly lease: string;
}

export interface AnswerReply {
  readonly outcome: 'committed' | 'duplicate' | 'rejected' | 'recorded' | 'stale';
  readonly reason: string;
  readonly relativeResidual: number;
}

/** One delivery of a group's task as the coordinator saw it: the worker that fetched Σ G̃, and when. */
interface Lease {
  readonly nonce: string;
  readonly worker: string;
  /** The worker's word (logged only). */
  readonly delivery: number;
  readonly started: number;
  answered: boolean;
}

interface GroupState {
  /** Undefined while the coordinator is still summing the group (and for a group committed before this solve began). */
  task: SolveTask | undefined;
  /** JetStream stream sequence of the group's current task message; undefined until its publish is acknowledged. */
  seq: number | undefined;
  /** Times the task was published again (terminated by a client, or not answered in time). */
  reissued: number;
  /** The current delivery's lease; undefined while the task waits in the queue. */
  lease: Lease | undefined;
  state: GroupTaskState;
  worker: string;
  attempts: number;
  lastError: string;
}

interface JobSolve {
  readonly request: SolveRequest;
  readonly groups: Map<string, GroupState>;
  readonly total: number;
  committed: number;
  /** Date.now() of the last publish, fetch, answer or commit of any of its groups. */
  lastProgress: number;
  readonly onProgress: (progress: SolveProgress) => void;
  resolve(): void;
  reject(error: Error): void;
  settled: boolean;
}

export interface NatsExecutorOptions {
  readonly url: NatsTarget;
  readonly queue: SolveQueueSettings;
  /** @default DEFAULT_RESIDUAL_TOLERANCE */
  readonly residualTolerance?: number;
  /**
   * Per-group solve deadline: a delivery not answered this long after its worker fetched Σ G̃ (or a job none of whose
   * tasks is fetched for this long) has its task published again; after MaxDeliver re-publications the job fails
   * with DEADLINE_EXCEEDED. @default DEFAULT_SOLVE_DEADLINE_MS
   */
  readonly deadlineMs?: number;
  readonly log?: (line: string) => void;
}

/** One hour: far above a CPU solve of the largest groups measured (docs/BENCHMARKS.md), and what a stalled worker can cost. */
export const DEFAULT_SOLVE_DEADLINE_MS = 3_600_000;

export class NatsSolveExecutor implements SolveExecutor {
  readonly name = 'nats';
  private readonly jobs = new Map<string, JobSolve>();
  /** Stream sequence → the task it carries (for the MaxDeliver advisory). */
  private readonly bySequence = new Map<number, { job: string; group: string }>();
  /** One solution check at a time: each holds a group's Σ G̃, R and X in memory. */
  private readonly checks = new Slots(1);
  /** The checks' thread, kept between answers (a fresh thread per answer cost more than a small group's solve). */
  private readonly checker = new PersistentWorker<never, CheckOutcome>(import.meta.url, 'task-worker');
  private readonly js: JetStreamClient;
  private readonly advisories: Subscription[] = [];

  private constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    private readonly options: NatsExecutorOptions,
  ) {
    this.js = jetstream(nc, { timeout: 10_000 });
  }

  static async start(options: NatsExecutorOptions): Promise<NatsSolveExecutor> {
    const nc = await connectNats(options.url, { name: 'gramfuse coordinator solve queue' });
    const jsm = await ensureSolveQueue(nc, options.queue);
    const executor = new NatsSolveExecutor(nc, jsm, options);
    const on =
      (kind: 'max-deliveries' | 'terminated') =>
      (error: Error | null, message: Msg): void => {
        if (error !== null) return;
        const advisory = parseSolveAdvisory(message.data);
        if (advisory === undefined) {
          executor.log(`skipping a message on ${message.subject} that is not a JetStream advisory`);
          return;
        }
        executor.advisory(kind, advisory.stream_seq, advisory.deliveries ?? 0);
      };
    executor.advisories.push(
      nc.subscribe(MAX_DELIVERIES_ADVISORY, { callback: on('max-deliveries') }),
      nc.subscribe(MSG_TERMINATED_ADVISORY, { callback: on('terminated') }),
    );
    return executor;
  }

  private log(line: string): void {
    this.options.log?.(line);
  }

  get tolerance(): number {
    return this.options.residualTolerance ?? DEFAULT_RESIDUAL_TOLERANCE;
  }

  private get deadlineMs(): number {
    return this.options.deadlineMs ?? DEFAULT_SOLVE_DEADLINE_MS;
  }

  async solve(request: SolveRequest, onProgress: (progress: SolveProgress) => void): Promise<SolveOutcome> {
    try {
      if (request.spec.method === 'regmean' && request.analysis.gramGroups.length > 0) await this.distribute(request, onProgress);
      // Every group is committed now: the pipeline resumes them all and averages, writes and reports.
      return await workerThreadExecutor.solve(request, onProgress);
    } finally {
      // Kept until here: a late answer for a committed group is still told `duplicate` (and its task acknowledged).
      this.jobs.delete(request.jobId);
    }
  }

  /** Publishes a group's task (again, with `reissue` > 0: a new message id, so JetStream does not drop it as a duplicate). */
  private async publishTask(job: JobSolve, state: GroupState & { task: SolveTask }): Promise<void> {
    const task = state.task;
    const id = state.reissued === 0 ? solveTaskId(task) : `${solveTaskId(task)}#${state.reissued}`;
    const ack = await this.js.publish(solveSubject(task.job), JSON.stringify(task), { msgID: id });
    if (state.seq !== undefined) this.bySequence.delete(state.seq);
    state.seq = ack.seq;
    this.bySequence.set(ack.seq, { job: task.job, group: task.group });
    job.lastProgress = Date.now();
    this.progress(job, task.group, 'queued', '');
  }

  /** Prepares the tasks in a worker thread, publishing each as soon as it is on disk, and waits for every group's commit. */
  private async distribute(request: SolveRequest, onProgress: (progress: SolveProgress) => void): Promise<void> {
    const jobId = request.jobId;
    const groups = new Map<string, GroupState>();
    for (const g of request.analysis.gramGroups)
      groups.set(g.id, {
        task: undefined,
        seq: undefined,
        reissued: 0,
        lease: undefined,
        state: 'preparing',
        worker: '',
        attempts: 0,
        lastError: '',
      });
    let resolve = (): void => undefined;
    let reject = (_: Error): void => undefined;
    const done = new Promise<void>((yes, no) => {
      resolve = yes;
      reject = no;
    });
    const job: JobSolve = {
      request,
      groups,
      total: groups.size,
      committed: 0,
      lastProgress: Date.now(),
      onProgress,
      resolve,
      reject,
      settled: false,
    };
    this.jobs.set(jobId, job);
    let publishing = Promise.resolve();
    let published = 0;
    const publish = (task: SolveTask): void => {
      const state = groups.get(task.group);
      if (state === undefined) return;
      state.task = task;
      state.state = 'queued';
      published++;
      publishing = publishing.then(() => this.publishTask(job, state as GroupState & { task: SolveTask }));
    };
    const watchdog = setInterval(() => this.watch(job), Math.min(1000, this.deadlineMs / 4));
    watchdog.unref();
    try {
      const prepared = await callWorker<SolveTask, PreparedTasks>(
        import.meta.url,
        'task-worker',
        { kind: 'prepare', request } satisfies TaskWorkerRequest,
        publish,
      );
      await publishing;
      for (const id of prepared.committed) groups.get(id)!.state = 'committed';
      job.committed += prepared.committed.length;
      this.log(
        `job ${jobId}: ${published} solve task(s) on ${SOLVE_STREAM}${prepared.committed.length > 0 ? ` (${prepared.committed.length} group(s) already committed)` : ''}`,
      );
      if (job.committed >= job.total && !job.settled) job.resolve();
      await done;
    } catch (error) {
      job.settled = true;
      await publishing.catch(() => undefined);
      throw error;
    } finally {
      job.settled = true;
      clearInterval(watchdog);
      // What is left of the job's tasks leaves the queue (a worker that holds one finds the job closed or done): a
      // failed job's, and a done job's messages published again that nobody took, or that a hostile client holds.
      await this.jsm.streams.purge(SOLVE_STREAM, { filter: solveSubject(jobId) }).catch(() => undefined);
      for (const [seq, task] of this.bySequence) if (task.job === jobId) this.bySequence.delete(seq);
    }
  }

  private progress(job: JobSolve, group: string, state: GroupTaskState, worker: string): void {
    job.onProgress({ phase: 'solve', done: job.committed, total: job.total, item: group, state, worker });
  }

  private fail(job: JobSolve, error: GramfuseError): void {
    if (job.settled) return;
    job.settled = true;
    job.reject(error);
  }

  /** A JetStream advisory about one task message: only the group's current message counts (a stale or forged sequence is ignored). */
  private advisory(kind: 'max-deliveries' | 'terminated', seq: number, deliveries: number): void {
    const ref = this.bySequence.get(seq);
    const job = ref === undefined ? undefined : this.jobs.get(ref.job);
    const state = ref === undefined ? undefined : job?.groups.get(ref.group);
    if (job === undefined || state?.task === undefined || state.seq !== seq || state.state === 'committed' || job.settled) return;
    if (kind === 'max-deliveries') {
      this.outOfDeliveries(job, ref!.group, state, deliveries);
      return;
    }
    this.reissue(
      job,
      ref!.group,
      state as GroupState & { task: SolveTask },
      ErrorCode.SolveFailed,
      `its task message (stream sequence ${seq}) was terminated by a client of the queue after ${deliveries} delivery(ies)`,
    );
  }

  /** JetStream gave up on the group's task (MaxDeliver, counted by JetStream): the job fails naming the last error. */
  private outOfDeliveries(job: JobSolve, group: string, state: GroupState, deliveries: number): void {
    state.state = 'failed';
    const jobId = job.request.jobId;
    this.fail(
      job,
      new GramfuseError(
        ErrorCode.SolveFailed,
        `job ${jobId}: the solve task of group ${group} was delivered ${deliveries} times (MaxDeliver) without an accepted solution; last: ${state.lastError === '' ? `no answer (${state.worker === '' ? 'no solver fetched its sums: a client that is not a solver may be taking and naking it' : `worker ${state.worker} lost or past AckWait`})` : `${state.worker}: ${state.lastError}`}`,
        { facts: { job: jobId, group, deliveries, worker: state.worker, lastError: state.lastError } },
      ),
    );
  }

  /**
   * Publishes the group's task again (the current lease becomes stale), at most MaxDeliver times; past that the job
   * fails with `code`, `why` in its message.
   */
  private reissue(job: JobSolve, group: string, state: GroupState & { task: SolveTask }, code: ErrorCode, why: string): void {
    if (job.settled) return;
    const jobId = job.request.jobId;
    const limit = this.options.queue.maxDeliver;
    if (state.reissued >= limit) {
      state.state = 'failed';
      this.fail(
        job,
        new GramfuseError(
          code,
          `job ${jobId}: group ${group}: ${why}; its task was already published again ${state.reissued} times (MaxDeliver)`,
          {
            facts: { job: jobId, group, reissued: state.reissued, worker: state.worker },
          },
        ),
      );
      return;
    }
    state.reissued++;
    state.lease = undefined;
    state.state = 'queued';
    state.lastError = why;
    this.log(`job ${jobId}: group ${group}: ${why}; published again (${state.reissued} of at most ${limit})`);
    this.publishTask(job, state).catch((error: unknown) => this.fail(job, toGramfuseError(error)));
  }

  /** Once a second per job: leases past the deadline, and a job whose tasks nobody fetched for as long. */
  private watch(job: JobSolve): void {
    if (job.settled) return;
    const now = Date.now();
    const limit = this.deadlineMs;
    const seconds = `${limit / 1000} s`;
    let active = false;
    for (const [group, state] of job.groups) {
      if (state.task === undefined || state.state === 'committed') continue;
      if (state.state === 'checking') active = true;
      const lease = state.lease;
      if (lease === undefined || lease.answered) continue;
      if (now - lease.started <= limit) {
        active = true;
        continue;
      }
      this.reissue(
        job,
        group,
        state as GroupState & { task: SolveTask },
        ErrorCode.DeadlineExceeded,
        `solver ${lease.worker} fetched its sums ${((now - lease.started) / 1000).toFixed(0)} s ago and has not answered (the per-group solve deadline is ${seconds}, --solve-deadline)`,
      );
    }
    if (active || job.settled || now - job.lastProgress <= limit) return;
    job.lastProgress = now;
    for (const [group, state] of job.groups)
      if (state.task !== undefined && state.state !== 'committed' && state.state !== 'checking')
        this.reissue(
          job,
          group,
          state as GroupState & { task: SolveTask },
          ErrorCode.DeadlineExceeded,
          `no solver fetched its sums for ${seconds} (the per-group solve deadline, --solve-deadline): no solver is running, or a client that is not one holds its task message`,
        );
  }

  /** The groups of a job's distributed solve in progress (empty when none is). */
  view(jobId: string): SolveGroupView[] {
    const job = this.jobs.get(jobId);
    if (job === undefined) return [];
    return [...job.groups].map(([group, s]) => ({ group, state: s.state, worker: s.worker, attempts: s.attempts, lastError: s.lastError }));
  }

  private pending(jobId: string, group: string, gramSha256: string): { job: JobSolve; state: GroupState & { task: SolveTask } } {
    const job = this.jobs.get(jobId);
    if (job === undefined)
      throw new GramfuseError(
        ErrorCode.Unavailable,
        `job ${jobId} is not handing out solve tasks yet (it is being prepared); retry later`,
        {
          facts: { job: jobId },
        },
      );
    const found = job.groups.get(group);
    if (found === undefined)
      throw new GramfuseError(ErrorCode.InvalidArgument, `job ${jobId} has no Gram group ${group}`, { facts: { job: jobId, group } });
    if (found.state === 'committed') return { job, state: found as GroupState & { task: SolveTask } };
    if (found.task === undefined)
      throw new GramfuseError(ErrorCode.Unavailable, `job ${jobId}, group ${group}: its sums are being prepared; retry later`, {
        facts: { job: jobId, group },
      });
    const state = found as GroupState & { task: SolveTask };
    if (state.task.gram.sha256 !== gramSha256)
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        `job ${jobId}, group ${group}: the task names Σ G̃ ${gramSha256.slice(0, 16)}…, the coordinator holds ${state.task.gram.sha256.slice(0, 16)}…; drop the stale task`,
        { facts: { job: jobId, group } },
      );
    return { job, state };
  }

  /**
   * Where the part of a group's task lies, for a worker's FetchInput. The gram part is fetched once per delivery: it
   * must name the group's current task message, and it opens the delivery's lease (any earlier one becomes stale).
   */
  input(
    worker: string,
    jobId: string,
    group: string,
    part: string,
    sha256: string,
    delivery: { streamSequence: number; count: number } = { streamSequence: 0, count: 0 },
  ): { path: string; bytes: number; committed: boolean; lease: string } {
    if (part !== 'gram' && part !== 'rhs')
      throw new GramfuseError(ErrorCode.InvalidArgument, `a task part is gram or rhs, not ${JSON.stringify(part.slice(0, 40))}`);
    const job = this.jobs.get(jobId);
    const known = job?.groups.get(group);
    const gramSha = part === 'gram' ? sha256 : (known?.task?.gram.sha256 ?? '');
    const { job: j, state } = this.pending(jobId, group, gramSha);
    if (state.state === 'committed') return { path: '', bytes: 0, committed: true, lease: '' };
    const expected = part === 'gram' ? state.task.gram : state.task.rhsPart;
    if (expected.sha256 !== sha256)
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        `job ${jobId}, group ${group}: the task's ${part} digest is not the coordinator's`,
        {
          facts: { job: jobId, group, part },
        },
      );
    let lease = '';
    if (part === 'gram') {
      if (state.seq === undefined)
        throw new GramfuseError(ErrorCode.Unavailable, `job ${jobId}, group ${group}: its task is being published; retry later`, {
          facts: { job: jobId, group },
        });
      if (delivery.streamSequence !== state.seq)
        throw new GramfuseError(
          ErrorCode.InvalidArgument,
          `job ${jobId}, group ${group}: stream sequence ${delivery.streamSequence} is not the group's current task message; drop the stale task`,
          { facts: { job: jobId, group, streamSequence: delivery.streamSequence } },
        );
      lease = randomBytes(16).toString('hex');
      state.lease = { nonce: lease, worker, delivery: delivery.count, started: Date.now(), answered: false };
      state.worker = worker;
      state.state = 'fetching';
      j.lastProgress = Date.now();
    } else if (state.lease?.worker === worker && !state.lease.answered) state.state = 'solving';
    this.progress(j, group, state.state, state.worker);
    return { path: taskPartPath(j.request.stateDir, jobId, group, part), bytes: expected.bytes, committed: false, lease };
  }

  /** Why `lease` may not answer the group now (undefined: it may), as a `stale` reply. */
  private stale(state: GroupState, worker: string, lease: string): AnswerReply | undefined {
    const current = state.lease;
    const reason =
      current === undefined || current.nonce !== lease || current.worker !== worker
        ? `lease ${lease === '' ? '(none)' : `${lease.slice(0, 8)}…`} is not this group's current delivery: answers are bound to the delivery whose fetch of Σ G̃ handed out the lease, and the task was ${current === undefined ? 'put back in the queue' : 'handed out again'} since; leave this delivery alone`
        : current.answered
          ? 'this delivery was answered already (one answer per lease)'
          : undefined;
    return reason === undefined ? undefined : { outcome: 'stale', reason, relativeResidual: 0 };
  }

  /**
   * A Submit's header, checked against the task and its lease: a reply when nothing is to be received (the group is
   * committed, or the lease is stale), else the file the answer's bytes go into and how many there must be.
   */
  beginAnswer(worker: string, header: AnswerHeader): AnswerReply | { path: string; bytes: number } {
    const { job, state } = this.pending(header.jobId, header.group, header.gramSha256);
    if (state.state === 'committed') return { outcome: 'duplicate', reason: 'the group was already committed', relativeResidual: 0 };
    const stale = this.stale(state, worker, header.lease);
    if (stale !== undefined) {
      this.log(`job ${header.jobId}: group ${header.group}: ${worker}'s answer refused as stale: ${stale.reason}`);
      return stale;
    }
    if (header.n !== state.task.n || header.rhs !== state.task.rhs)
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        `job ${header.jobId}, group ${header.group}: a solution of ${header.n} × ${header.rhs}, the group's X is ${state.task.n} × ${state.task.rhs}`,
        { facts: { job: header.jobId, group: header.group } },
      );
    state.lease!.answered = true;
    job.lastProgress = Date.now();
    return {
      path: join(
        job.request.stateDir,
        'jobs',
        header.jobId,
        'solve',
        'answers',
        `${statisticFile(`group:${header.group}`)}.${randomUUID()}.bin`,
      ),
      bytes: state.task.n * state.task.rhs * 8,
    };
  }

  /** A worker could not solve: its error is recorded against its lease (JetStream, not the worker, counts deliveries). */
  recordError(worker: string, header: AnswerHeader): AnswerReply {
    const { job, state } = this.pending(header.jobId, header.group, header.gramSha256);
    if (state.state === 'committed') return { outcome: 'duplicate', reason: 'the group was already committed', relativeResidual: 0 };
    const stale = this.stale(state, worker, header.lease);
    if (stale !== undefined) return stale;
    state.lease!.answered = true;
    state.attempts++;
    state.lastError = `${header.errorCode}: ${header.errorMessage}`.slice(0, 2000);
    state.state = 'queued';
    job.lastProgress = Date.now();
    this.log(
      `job ${header.jobId}: group ${header.group}: ${worker} could not solve (delivery ${header.delivery}, its word): ${state.lastError}`,
    );
    this.progress(job, header.group, 'queued', worker);
    return { outcome: 'recorded', reason: '', relativeResidual: 0 };
  }

  /** Checks a received answer (in a worker thread, one at a time) and commits it when it passes. */
  async settle(worker: string, header: AnswerHeader, answerPath: string): Promise<AnswerReply> {
    await this.checks.acquire();
    let checked = false;
    try {
      const { job, state } = this.pending(header.jobId, header.group, header.gramSha256);
      if (state.state === 'committed') return { outcome: 'duplicate', reason: 'the group was already committed', relativeResidual: 0 };
      const lease = state.lease;
      if (lease?.nonce !== header.lease || lease.worker !== worker)
        return (
          this.stale(state, worker, header.lease) ?? { outcome: 'stale', reason: 'the task was handed out again', relativeResidual: 0 }
        );
      state.state = 'checking';
      state.attempts++;
      this.progress(job, header.group, 'checking', worker);
      const request: CheckRequest = {
        stateDir: job.request.stateDir,
        jobId: header.jobId,
        analysis: job.request.analysis,
        group: header.group,
        answerPath,
        worker,
        jitter: header.jitter,
        seconds: (Date.now() - lease.started) / 1000,
        tolerance: this.tolerance,
      };
      let outcome: CheckOutcome;
      try {
        checked = true;
        outcome = await this.checker.call({ kind: 'check', request } satisfies TaskWorkerRequest);
      } catch (error) {
        const coded = toGramfuseError(error);
        state.state = 'queued';
        state.lastError = `${coded.code}: ${coded.message}`;
        this.fail(job, coded);
        throw coded;
      }
      job.lastProgress = Date.now();
      if (outcome.outcome === 'rejected') {
        state.state = 'rejected';
        state.lastError = `rejected: ${outcome.reason}`;
        this.log(`job ${header.jobId}: group ${header.group}: ${worker}'s solution rejected: ${outcome.reason}`);
        this.progress(job, header.group, 'rejected', worker);
        return { outcome: 'rejected', reason: outcome.reason, relativeResidual: outcome.relativeResidual };
      }
      state.state = 'committed';
      if (outcome.outcome === 'committed') {
        job.committed++;
        this.log(
          `job ${header.jobId}: group ${header.group} committed, solved by ${worker} in ${request.seconds.toFixed(2)} s from its fetch (relative residual ${outcome.relativeResidual.toExponential(1)}; ${job.committed}/${job.total})`,
        );
      }
      failpoint('solve.committed');
      this.progress(job, header.group, 'committed', worker);
      if (job.committed >= job.total && !job.settled) job.resolve();
      return { outcome: outcome.outcome, reason: outcome.reason, relativeResidual: outcome.relativeResidual };
    } finally {
      // An answer that never reached the check (stale, or its job gone) is not kept.
      if (!checked) await rm(answerPath, { force: true });
      this.checks.release();
    }
  }

  async close(): Promise<void> {
    for (const subscription of this.advisories) subscription.unsubscribe();
    await this.checker.close();
    await this.nc.drain().catch(() => undefined);
  }
}
