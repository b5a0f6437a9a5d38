// `gramfuse solver serve`: a solver worker. It pulls solve tasks (one per Gram group) from the JetStream work queue
// GRAMFUSE_SOLVE, fetches the group's Σ G̃ and R from the coordinator over gRPC (digests checked), solves in float64
// (onnxruntime, CUDA when present) on a thread of its own while the main thread keeps the task's in-progress acks
// going, submits X over gRPC, and acknowledges the task once the coordinator committed it (or already had it).
// A rejected answer or a failed solve is negatively acknowledged with a growing delay, so another worker can take it.
import { createHash } from 'node:crypto';
import type { Worker } from 'node:worker_threads';

import { jetstream, type JsMsg } from '@nats-io/jetstream';

import { type ConnectOptions, connectFederation, type FederationClient } from '../client/index.js';
import { ErrorCode, failpoint, faultInjected, startWorker, toGramfuseError } from '../shared/index.js';
import { solverProbeModel } from '../shared/linalg/index.js';
import { connectNats, parseSolveTask, SOLVE_CONSUMER, SOLVE_STREAM, type SolveTask, solveTaskId } from '../shared/nats/index.js';
import type { NatsTarget } from '../shared/nats/index.js';
import { resolveDevice } from '../shared/onnx/index.js';
import type { ThreadAnswer, ThreadSetup, ThreadTask } from './solve-thread.js';

export interface SolverOptions {
  /** The coordinator (mTLS like an agent; the certificate's name must be one of its --solver-identities). */
  readonly coordinator: ConnectOptions;
  readonly nats: NatsTarget;
  /** @default auto: CUDA when its provider loads, else CPU */
  readonly device?: 'auto' | 'cpu' | 'cuda';
  /** onnxruntime intra-op threads of the solve. @default onnxruntime's choice (all cores) */
  readonly threads?: number;
  /**
   * The solve thread's watchdog: a solve that has not answered after this long is reported as failed
   * (DEADLINE_EXCEEDED) and its task released, instead of being held by in-progress acks forever.
   * @default DEFAULT_SOLVE_TIMEOUT_MS
   */
  readonly solveTimeoutMs?: number;
  /** One line per event (task taken, solved, answered). */
  readonly log?: (line: string) => void;
  /** One object per task answered, for programs (bench/solve-distributed). */
  readonly onTask?: (record: TaskRecord) => void;
}

/** What one task cost this worker, in seconds. */
export interface TaskRecord {
  readonly job: string;
  readonly group: string;
  readonly n: number;
  readonly rhs: number;
  readonly delivery: number;
  readonly outcome: string;
  readonly fetchSeconds: number;
  readonly solveSeconds: number;
  /** Submit, the coordinator's check and commit, until its reply. */
  readonly submitSeconds: number;
}

export interface SolverHandle {
  readonly identity: string;
  readonly device: 'cpu' | 'cuda';
  /** Stops taking tasks; the task in hand is finished first. */
  stop(): Promise<void>;
  /** Settles when the worker stopped (or failed). */
  readonly stopped: Promise<void>;
}

/** 50 minutes: under the coordinator's default per-group deadline (an hour), so a stuck thread is reported first. */
export const DEFAULT_SOLVE_TIMEOUT_MS = 3_000_000;

/** A rejected or failed task comes back after this delay (deliveries 1, 2, 3, …: 1 s, 2 s, 4 s, … at most 30 s). */
export function redeliveryDelayMs(delivery: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, delivery - 1));
}

/**
 * The solve thread: one solver for the worker's life, one task at a time. A thread that dies (out of memory, a
 * crash in a kernel) answers its task with an error — so the task is negatively acknowledged, never held by
 * in-progress acks forever — and is started again for the next task. A thread that does not answer within the
 * watchdog's time is abandoned the same way (its task answered with an error, a new thread for the next one); it is
 * not terminated, since terminating a thread inside an onnxruntime run aborts the whole process.
 */
class SolveThread {
  private worker: { thread: Worker; waiting: Map<number, (answer: ThreadAnswer) => void> } | undefined;
  private next = 1;
  private readonly abandoned: Worker[] = [];

  constructor(
    private readonly setup: ThreadSetup,
    private readonly timeoutMs: number,
  ) {
    this.worker = this.start();
  }

  private start(): { thread: Worker; waiting: Map<number, (answer: ThreadAnswer) => void> } {
    const thread = startWorker(import.meta.url, 'solve-thread');
    const waiting = new Map<number, (answer: ThreadAnswer) => void>();
    const started = { thread, waiting };
    const died = (why: string): void => {
      if (this.worker === started) this.worker = undefined;
      for (const resolve of waiting.values())
        resolve({ id: 0, error: { code: ErrorCode.RuntimeFailed, message: `the solve thread died: ${why}` } });
      waiting.clear();
    };
    thread.on('message', (answer: ThreadAnswer | { released: true }) => {
      if ('id' in answer) {
        waiting.get(answer.id)?.(answer);
        waiting.delete(answer.id);
      }
    });
    thread.on('error', (error) => died(error.message));
    thread.on('exit', (code) => died(`it exited with code ${code}`));
    thread.postMessage({ setup: this.setup });
    return started;
  }

  solve(task: Omit<ThreadTask, 'id'>): Promise<ThreadAnswer> {
    const id = this.next++;
    const worker = (this.worker ??= this.start());
    return new Promise((resolve) => {
      const watchdog = setTimeout(() => {
        // The watchdog: the thread is stuck (a kernel that never returns); it is left behind, unreferenced.
        if (!worker.waiting.delete(id)) return;
        if (this.worker === worker) this.worker = undefined;
        worker.thread.unref();
        this.abandoned.push(worker.thread);
        resolve({
          id,
          error: {
            code: ErrorCode.DeadlineExceeded,
            message: `the solve thread did not answer within ${this.timeoutMs / 1000} s (the worker's watchdog, --solve-timeout); it was abandoned`,
          },
        });
      }, this.timeoutMs);
      worker.waiting.set(id, (answer) => {
        clearTimeout(watchdog);
        resolve(answer);
      });
      worker.thread.postMessage({ task: { ...task, id } }, [task.packed.buffer as ArrayBuffer, task.r.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    await worker?.thread.terminate();
  }
}

const float64 = (bytes: Uint8Array): Float64Array => new Float64Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 8);

export async function startSolver(options: SolverOptions): Promise<SolverHandle> {
  const log = options.log ?? (() => undefined);
  const choice = await resolveDevice(options.device ?? 'auto', solverProbeModel());
  const client: FederationClient = connectFederation(options.coordinator);
  const identity = client.identity;
  const nc = await connectNats(options.nats, { name: `gramfuse solver ${identity}` });
  const js = jetstream(nc, { timeout: 10_000 });
  const thread = new SolveThread(
    { device: choice.device, ...(options.threads === undefined ? {} : { threads: options.threads }) },
    options.solveTimeoutMs ?? DEFAULT_SOLVE_TIMEOUT_MS,
  );
  let stopping = false;
  /** Resolves when stop() is called (a stalling fault waits on it). */
  let onStop = (): void => undefined;
  const stopRequested = new Promise<void>((resolve) => (onStop = resolve));
  /** Fault injection (solver.stale-answer): answers kept from an earlier delivery, with that delivery's lease. */
  const kept = new Map<string, { lease: string; x: Uint8Array; jitter: number; conditionEstimate: number; seconds: number }>();
  /** Tasks this worker's answers were rejected for: offered again, it leaves them to the other workers. */
  const rejected = new Set<string>();

  const consumerOf = async () => {
    let said = false;
    while (!stopping) {
      try {
        return await js.consumers.get(SOLVE_STREAM, SOLVE_CONSUMER);
      } catch (error) {
        if (!said)
          log(
            `waiting for the solve queue ${SOLVE_STREAM}/${SOLVE_CONSUMER} (a coordinator started with --solvers nats creates it): ${(error as Error).message}`,
          );
        said = true;
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
    return undefined;
  };

  const handle = async (msg: JsMsg, ackWaitMs: number, maxDeliver: number): Promise<void> => {
    let task: SolveTask;
    try {
      task = parseSolveTask(msg.data);
    } catch (error) {
      log(`dropping a message that is not a solve task: ${(error as Error).message}`);
      // No reason: nats-server 2.9 does not read `+TERM <reason>` as a termination.
      msg.term();
      return;
    }
    // JetStream's own count of this message's deliveries, never one carried in a payload.
    const delivery = msg.info.deliveryCount;
    const lastDelivery = maxDeliver > 0 && delivery >= maxDeliver;
    const key = solveTaskId(task);
    if (rejected.has(key) && !lastDelivery && !kept.has(key)) {
      msg.nak(1000);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      return;
    }
    // In-progress acks while the task is held: JetStream redelivers it only if this worker goes silent for AckWait.
    const heartbeat = setInterval(() => msg.working(), Math.max(200, Math.floor(ackWaitMs / 3)));
    const where = `job ${task.job}, group ${task.group} (n ${task.n}, ${task.rhs} right-hand sides, delivery ${delivery})`;
    let lease = '';
    const header = () => ({
      jobId: task.job,
      group: task.group,
      gramSha256: task.gram.sha256,
      n: task.n,
      rhs: task.rhs,
      device: choice.device,
      delivery,
      lastDelivery,
      lease,
    });
    const started = performance.now();
    let fetchSeconds = 0;
    let solveSeconds = 0;
    const record = (outcome: string, submitStarted: number): void =>
      options.onTask?.({
        job: task.job,
        group: task.group,
        n: task.n,
        rhs: task.rhs,
        delivery,
        outcome,
        fetchSeconds,
        solveSeconds,
        submitSeconds: (performance.now() - submitStarted) / 1000,
      });
    const submit = (x: Uint8Array, solved: { jitter: number; conditionEstimate: number; seconds: number }) =>
      client.submitSolution(
        {
          ...header(),
          ...solved,
          sha256: createHash('sha256').update(x).digest('hex'),
          errorCode: '',
          errorMessage: '',
        },
        x,
      );
    try {
      log(`${where}: taken`);
      const fetch = (part: 'gram' | 'rhs') =>
        client.fetchSolveInput({
          jobId: task.job,
          group: task.group,
          part,
          sha256: part === 'gram' ? task.gram.sha256 : task.rhsPart.sha256,
          bytes: part === 'gram' ? task.gram.bytes : task.rhsPart.bytes,
          streamSequence: msg.info.streamSequence,
          delivery,
        });
      // Both sums at once: two streams share the connection, so the second does not wait for the first's last chunk.
      const [gram, rhs] = await Promise.all([fetch('gram'), fetch('rhs')]);
      fetchSeconds = (performance.now() - started) / 1000;
      if (gram === undefined || rhs === undefined) {
        log(`${where}: already committed; acknowledged`);
        msg.ack();
        return;
      }
      lease = gram.lease;
      const stash = kept.get(key);
      if (stash !== undefined) {
        // Fault injection (solver.stale-answer): the answer of an earlier delivery, sent with that delivery's lease.
        kept.delete(key);
        const stale = await client.submitSolution(
          {
            ...header(),
            lease: stash.lease,
            jitter: stash.jitter,
            conditionEstimate: stash.conditionEstimate,
            seconds: stash.seconds,
            sha256: createHash('sha256').update(stash.x).digest('hex'),
            errorCode: '',
            errorMessage: '',
          },
          stash.x,
        );
        log(`${where}: fault injected: the answer of an earlier delivery sent with its lease: ${stale.outcome}: ${stale.reason}`);
      }
      if (faultInjected('solver.forge-last-delivery')) {
        // Fault injection: an error report that claims to be the task's last delivery (MaxDeliver), on its first.
        const reply = await client.submitSolution({
          ...header(),
          delivery: Math.max(maxDeliver, 1),
          lastDelivery: true,
          jitter: 0,
          conditionEstimate: 0,
          seconds: 0,
          sha256: '',
          errorCode: ErrorCode.RuntimeFailed,
          errorMessage: 'fault injected: a forged last delivery',
        });
        log(`${where}: fault injected: reported an error as the last delivery (${maxDeliver}): ${reply.outcome}`);
        msg.nak();
        return;
      }
      if (faultInjected('solver.stall')) {
        // Fault injection: the task is held (in-progress acks go on) and never answered, until the worker stops.
        log(`${where}: fault injected: stalling (holding the task, never answering)`);
        await stopRequested;
        return;
      }
      failpoint('solver.solve');
      const solveStarted = performance.now();
      const answer = await thread.solve({
        n: task.n,
        rhs: task.rhs,
        packed: float64(gram.data),
        r: float64(rhs.data),
        label: task.group,
        ...(faultInjected('solver.thread-dies') ? { die: true } : {}),
        ...(faultInjected('solver.thread-hangs') ? { hang: true } : {}),
        ...(faultInjected('solver.over-jitter') ? { overJitter: 1e-4 } : {}),
      });
      solveSeconds = (performance.now() - solveStarted) / 1000;
      const submitStarted = performance.now();
      if (answer.error !== undefined || answer.x === undefined) {
        const error = answer.error ?? { code: ErrorCode.Internal, message: 'the solve thread answered nothing' };
        log(`${where}: could not solve: ${error.code}: ${error.message}`);
        const reply = await client.submitSolution({
          ...header(),
          jitter: 0,
          conditionEstimate: 0,
          seconds: solveSeconds,
          sha256: '',
          errorCode: error.code,
          errorMessage: error.message,
        });
        record('error', submitStarted);
        if (reply.outcome === 'stale') log(`${where}: stale: ${reply.reason}`);
        else msg.nak(redeliveryDelayMs(delivery));
        return;
      }
      const x = new Uint8Array(answer.x.buffer, answer.x.byteOffset, answer.x.byteLength);
      let solved = {
        jitter: answer.jitter ?? 0,
        conditionEstimate: answer.conditionEstimate ?? 0,
        seconds: answer.seconds ?? solveSeconds,
      };
      if (faultInjected('solver.stale-answer')) {
        // Fault injection: the answer is kept, not sent; the task goes back to the queue and, when it comes back, the
        // kept answer is sent with this delivery's lease before the new delivery's.
        kept.set(key, { lease, x, ...solved });
        log(`${where}: fault injected: answer kept for a later delivery`);
        msg.nak();
        return;
      }
      // Fault injection: diagnostics the worker makes up (the coordinator must compute its own).
      if (faultInjected('solver.forged-diagnostics')) solved = { ...solved, conditionEstimate: 1, seconds: 1e-6 };
      const reply = await submit(x, solved);
      record(reply.outcome, submitStarted);
      if (reply.outcome === 'committed' || reply.outcome === 'duplicate') {
        log(
          `${where}: ${reply.outcome} (solve ${solveSeconds.toFixed(2)} s, relative residual ${reply.relativeResidual.toExponential(1)})`,
        );
        msg.ack();
      } else if (reply.outcome === 'stale') {
        // The task was handed out again (this delivery is past AckWait or its deadline): the message is another's now.
        log(`${where}: stale: ${reply.reason}`);
      } else {
        log(`${where}: ${reply.outcome}: ${reply.reason}`);
        rejected.add(key);
        msg.nak(redeliveryDelayMs(delivery));
      }
    } catch (error) {
      const coded = toGramfuseError(error);
      // A task of a job that is gone or failed, or one for other sums than the coordinator's, is void: dropped.
      if (coded.code === ErrorCode.JobNotFound || coded.code === ErrorCode.JobClosed || coded.code === ErrorCode.InvalidArgument) {
        log(`${where}: dropped: ${coded.code}: ${coded.message}`);
        msg.term();
      } else {
        log(`${where}: will be retried: ${coded.code}: ${coded.message}`);
        msg.nak(redeliveryDelayMs(delivery));
      }
    } finally {
      clearInterval(heartbeat);
    }
  };

  const stopped = (async () => {
    try {
      const consumer = await consumerOf();
      if (consumer === undefined) return;
      const info = await consumer.info();
      const ackWaitMs = Number(info.config.ack_wait ?? 30e9) / 1e6;
      const maxDeliver = Number(info.config.max_deliver ?? -1);
      log(`solver ${identity} ready on ${choice.device} (${choice.reason}); AckWait ${ackWaitMs / 1000} s, MaxDeliver ${maxDeliver}`);
      while (!stopping) {
        let msg: JsMsg | null;
        try {
          msg = await consumer.next({ expires: 2000 });
        } catch (error) {
          if (stopping) break;
          log(`pulling a task failed (retrying): ${(error as Error).message}`);
          await new Promise((resolve) => setTimeout(resolve, 1000));
          continue;
        }
        if (msg !== null) await handle(msg, ackWaitMs, maxDeliver);
      }
    } finally {
      await thread.close();
      client.close();
      await nc.drain().catch(() => undefined);
    }
  })();
  return {
    identity,
    device: choice.device,
    stopped,
    stop: async () => {
      stopping = true;
      onStop();
      await stopped;
    },
  };
}
