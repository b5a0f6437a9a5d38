// `coordinator serve --solvers nats`: a job's Gram groups are solved by solver workers (`gramfuse solver serve`) that
// pull one task per group from the JetStream work queue GRAMFUSE_SOLVE, fetch the group's sums over gRPC, and submit
// X over gRPC. This executor prepares the tasks (sums on disk, digests in the descriptors), publishes them (message
// ids de-duplicate a restarted coordinator's second publish), checks and commits each answer once, fails the job
// when a task runs out of deliveries, and then runs the in-process pipeline, which finds every group committed and
// only averages the other parameters and writes the merged model. NATS carries descriptors, never matrices.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';

import { jetstream, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';

import { callWorker, ErrorCode, failpoint, GramfuseError, PersistentWorker, toGramfuseError } from '../../shared/index.js';
import { statisticFile } from '../../shared/federation/index.js';
import {
  connectNats,
  ensureSolveQueue,
  MAX_DELIVERIES_ADVISORY,
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
  readonly delivery: number;
  readonly lastDelivery: boolean;
}

export interface AnswerReply {
  readonly outcome: 'committed' | 'duplicate' | 'rejected' | 'recorded';
  readonly reason: string;
  readonly relativeResidual: number;
}

interface GroupState {
  /** Undefined while the coordinator is still summing the group (and for a group committed before this solve began). */
  task: SolveTask | undefined;
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
  readonly log?: (line: string) => void;
}

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
  private advisories?: Subscription;

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
    executor.advisories = nc.subscribe(MAX_DELIVERIES_ADVISORY, {
      callback: (error, message) => {
        if (error !== null) return;
        try {
          const advisory = JSON.parse(new TextDecoder().decode(message.data)) as { stream_seq?: number; deliveries?: number };
          const task = executor.bySequence.get(Number(advisory.stream_seq));
          if (task !== undefined) executor.outOfDeliveries(task.job, task.group, Number(advisory.deliveries));
        } catch {
          // not an advisory we can read: nothing to do
        }
      },
    });
    return executor;
  }

  private log(line: string): void {
    this.options.log?.(line);
  }

  get tolerance(): number {
    return this.options.residualTolerance ?? DEFAULT_RESIDUAL_TOLERANCE;
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

  /** Prepares the tasks in a worker thread, publishing each as soon as it is on disk, and waits for every group's commit. */
  private async distribute(request: SolveRequest, onProgress: (progress: SolveProgress) => void): Promise<void> {
    const jobId = request.jobId;
    const groups = new Map<string, GroupState>();
    for (const g of request.analysis.gramGroups)
      groups.set(g.id, { task: undefined, state: 'preparing', worker: '', attempts: 0, lastError: '' });
    let resolve = (): void => undefined;
    let reject = (_: Error): void => undefined;
    const done = new Promise<void>((yes, no) => {
      resolve = yes;
      reject = no;
    });
    const job: JobSolve = { request, groups, total: groups.size, committed: 0, onProgress, resolve, reject, settled: false };
    this.jobs.set(jobId, job);
    let publishing = Promise.resolve();
    let published = 0;
    const publish = (task: SolveTask): void => {
      const state = groups.get(task.group);
      if (state === undefined) return;
      state.task = task;
      state.state = 'queued';
      published++;
      publishing = publishing.then(async () => {
        const ack = await this.js.publish(solveSubject(jobId), JSON.stringify(task), { msgID: solveTaskId(task) });
        this.bySequence.set(ack.seq, { job: jobId, group: task.group });
        this.progress(job, task.group, 'queued', '');
      });
    };
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
      // The job fails: what is left of its tasks leaves the queue (a worker that holds one finds the job closed).
      job.settled = true;
      await publishing.catch(() => undefined);
      await this.jsm.streams.purge(SOLVE_STREAM, { filter: solveSubject(jobId) }).catch(() => undefined);
      throw error;
    } finally {
      job.settled = true;
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

  private outOfDeliveries(jobId: string, group: string, deliveries: number): void {
    const job = this.jobs.get(jobId);
    const state = job?.groups.get(group);
    if (job === undefined || state === undefined || state.state === 'committed') return;
    state.state = 'failed';
    this.fail(
      job,
      new GramfuseError(
        ErrorCode.SolveFailed,
        `job ${jobId}: the solve task of group ${group} was delivered ${deliveries} times (MaxDeliver) without an accepted solution; last: ${state.lastError === '' ? `no answer (worker ${state.worker || 'none'} lost or past AckWait)` : `${state.worker}: ${state.lastError}`}`,
        { facts: { job: jobId, group, deliveries, worker: state.worker, lastError: state.lastError } },
      ),
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

  /** Where the part of a group's task lies, for a worker's FetchInput (the state shows the worker holds the group). */
  input(worker: string, jobId: string, group: string, part: string, sha256: string): { path: string; bytes: number; committed: boolean } {
    if (part !== 'gram' && part !== 'rhs')
      throw new GramfuseError(ErrorCode.InvalidArgument, `a task part is gram or rhs, not ${JSON.stringify(part.slice(0, 40))}`);
    const job = this.jobs.get(jobId);
    const known = job?.groups.get(group);
    const gramSha = part === 'gram' ? sha256 : (known?.task?.gram.sha256 ?? '');
    const { job: j, state } = this.pending(jobId, group, gramSha);
    if (state.state === 'committed') return { path: '', bytes: 0, committed: true };
    const expected = part === 'gram' ? state.task.gram : state.task.rhsPart;
    if (expected.sha256 !== sha256)
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        `job ${jobId}, group ${group}: the task's ${part} digest is not the coordinator's`,
        {
          facts: { job: jobId, group, part },
        },
      );
    state.worker = worker;
    state.state = part === 'gram' ? 'fetching' : 'solving';
    this.progress(j, group, state.state, worker);
    return { path: taskPartPath(j.request.stateDir, jobId, group, part), bytes: expected.bytes, committed: false };
  }

  /**
   * A Submit's header, checked against the task: 'duplicate' when the group is committed already, else the file the
   * answer's bytes go into and how many there must be.
   */
  beginAnswer(worker: string, header: AnswerHeader): 'duplicate' | { path: string; bytes: number } {
    const { job, state } = this.pending(header.jobId, header.group, header.gramSha256);
    if (state.state === 'committed') return 'duplicate';
    if (header.n !== state.task.n || header.rhs !== state.task.rhs)
      throw new GramfuseError(
        ErrorCode.UploadInvalid,
        `job ${header.jobId}, group ${header.group}: a solution of ${header.n} × ${header.rhs}, the group's X is ${state.task.n} × ${state.task.rhs}`,
        { facts: { job: header.jobId, group: header.group } },
      );
    state.worker = worker;
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

  /** A worker could not solve: its error is recorded (and fails the job when it was the task's last delivery). */
  recordError(worker: string, header: AnswerHeader): AnswerReply {
    const { job, state } = this.pending(header.jobId, header.group, header.gramSha256);
    if (state.state === 'committed') return { outcome: 'duplicate', reason: 'the group was already committed', relativeResidual: 0 };
    state.attempts++;
    state.worker = worker;
    state.lastError = `${header.errorCode}: ${header.errorMessage}`.slice(0, 2000);
    state.state = 'queued';
    this.log(`job ${header.jobId}: group ${header.group}: ${worker} could not solve (delivery ${header.delivery}): ${state.lastError}`);
    this.progress(job, header.group, 'queued', worker);
    if (header.lastDelivery) this.outOfDeliveries(header.jobId, header.group, header.delivery);
    return { outcome: 'recorded', reason: '', relativeResidual: 0 };
  }

  /** Checks a received answer (in a worker thread, one at a time) and commits it when it passes. */
  async settle(worker: string, header: AnswerHeader, answerPath: string): Promise<AnswerReply> {
    await this.checks.acquire();
    try {
      const { job, state } = this.pending(header.jobId, header.group, header.gramSha256);
      if (state.state === 'committed') return { outcome: 'duplicate', reason: 'the group was already committed', relativeResidual: 0 };
      state.state = 'checking';
      state.worker = worker;
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
        conditionEstimate: header.conditionEstimate,
        seconds: header.seconds,
        tolerance: this.tolerance,
      };
      let outcome: CheckOutcome;
      try {
        outcome = await this.checker.call({ kind: 'check', request } satisfies TaskWorkerRequest);
      } catch (error) {
        const coded = toGramfuseError(error);
        state.state = 'queued';
        state.lastError = `${coded.code}: ${coded.message}`;
        this.fail(job, coded);
        throw coded;
      }
      if (outcome.outcome === 'rejected') {
        state.state = 'rejected';
        state.lastError = `rejected: ${outcome.reason}`;
        this.log(`job ${header.jobId}: group ${header.group}: ${worker}'s solution rejected: ${outcome.reason}`);
        this.progress(job, header.group, 'rejected', worker);
        if (header.lastDelivery) this.outOfDeliveries(header.jobId, header.group, header.delivery);
        return { outcome: 'rejected', reason: outcome.reason, relativeResidual: outcome.relativeResidual };
      }
      state.state = 'committed';
      if (outcome.outcome === 'committed') {
        job.committed++;
        this.log(
          `job ${header.jobId}: group ${header.group} committed, solved by ${worker} on ${header.device || 'cpu'} in ${header.seconds.toFixed(2)} s (relative residual ${outcome.relativeResidual.toExponential(1)}; ${job.committed}/${job.total})`,
        );
      }
      failpoint('solve.committed');
      this.progress(job, header.group, 'committed', worker);
      if (job.committed >= job.total && !job.settled) job.resolve();
      return { outcome: outcome.outcome, reason: outcome.reason, relativeResidual: outcome.relativeResidual };
    } finally {
      this.checks.release();
    }
  }

  async close(): Promise<void> {
    this.advisories?.unsubscribe();
    await this.checker.close();
    await this.nc.drain().catch(() => undefined);
  }
}
