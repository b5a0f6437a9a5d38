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

/** A rejected or failed task comes back after this delay (deliveries 1, 2, 3, …: 1 s, 2 s, 4 s, … at most 30 s). */
export function redeliveryDelayMs(delivery: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, delivery - 1));
}

/**
 * The solve thread: one solver for the worker's life, one task at a time. A thread that dies (out of memory, a
 * crash in a kernel) answers its task with an error — so the task is negatively acknowledged, never held by
 * in-progress acks forever — and is started again for the next task.
 */
class SolveThread {
  private worker: Worker | undefined;
  private next = 1;
  private readonly waiting = new Map<number, (answer: ThreadAnswer) => void>();

  constructor(private readonly setup: ThreadSetup) {
    this.worker = this.start();
  }

  private start(): Worker {
    const worker = startWorker(import.meta.url, 'solve-thread');
    const died = (why: string): void => {
      if (this.worker === worker) this.worker = undefined;
      for (const resolve of this.waiting.values())
        resolve({ id: 0, error: { code: ErrorCode.RuntimeFailed, message: `the solve thread died: ${why}` } });
      this.waiting.clear();
    };
    worker.on('message', (answer: ThreadAnswer | { released: true }) => {
      if ('id' in answer) {
        this.waiting.get(answer.id)?.(answer);
        this.waiting.delete(answer.id);
      }
    });
    worker.on('error', (error) => died(error.message));
    worker.on('exit', (code) => died(`it exited with code ${code}`));
    worker.postMessage({ setup: this.setup });
    return worker;
  }

  solve(task: Omit<ThreadTask, 'id'>): Promise<ThreadAnswer> {
    const id = this.next++;
    const worker = (this.worker ??= this.start());
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      worker.postMessage({ task: { ...task, id } }, [task.packed.buffer as ArrayBuffer, task.r.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
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
  const thread = new SolveThread({ device: choice.device, ...(options.threads === undefined ? {} : { threads: options.threads }) });
  let stopping = false;
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
      msg.term('not a solve task');
      return;
    }
    const delivery = msg.info.deliveryCount;
    const lastDelivery = maxDeliver > 0 && delivery >= maxDeliver;
    const key = solveTaskId(task);
    if (rejected.has(key) && !lastDelivery) {
      msg.nak(1000);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      return;
    }
    // In-progress acks while the task is held: JetStream redelivers it only if this worker goes silent for AckWait.
    const heartbeat = setInterval(() => msg.working(), Math.max(200, Math.floor(ackWaitMs / 3)));
    const where = `job ${task.job}, group ${task.group} (n ${task.n}, ${task.rhs} right-hand sides, delivery ${delivery})`;
    const header = {
      jobId: task.job,
      group: task.group,
      gramSha256: task.gram.sha256,
      n: task.n,
      rhs: task.rhs,
      device: choice.device,
      delivery,
      lastDelivery,
    };
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
    try {
      log(`${where}: taken`);
      const fetch = (part: 'gram' | 'rhs') =>
        client.fetchSolveInput({
          jobId: task.job,
          group: task.group,
          part,
          sha256: part === 'gram' ? task.gram.sha256 : task.rhsPart.sha256,
          bytes: part === 'gram' ? task.gram.bytes : task.rhsPart.bytes,
        });
      // Both sums at once: two streams share the connection, so the second does not wait for the first's last chunk.
      const [gram, rhs] = await Promise.all([fetch('gram'), fetch('rhs')]);
      fetchSeconds = (performance.now() - started) / 1000;
      if (gram === undefined || rhs === undefined) {
        log(`${where}: already committed; acknowledged`);
        msg.ack();
        return;
      }
      failpoint('solver.solve');
      const solveStarted = performance.now();
      const answer = await thread.solve({
        n: task.n,
        rhs: task.rhs,
        packed: float64(gram),
        r: float64(rhs),
        label: task.group,
        ...(faultInjected('solver.thread-dies') ? { die: true } : {}),
      });
      solveSeconds = (performance.now() - solveStarted) / 1000;
      const submitStarted = performance.now();
      if (answer.error !== undefined || answer.x === undefined) {
        const error = answer.error ?? { code: ErrorCode.Internal, message: 'the solve thread answered nothing' };
        log(`${where}: could not solve: ${error.code}: ${error.message}`);
        await client.submitSolution({
          ...header,
          jitter: 0,
          conditionEstimate: 0,
          seconds: solveSeconds,
          sha256: '',
          errorCode: error.code,
          errorMessage: error.message,
        });
        record('error', submitStarted);
        msg.nak(redeliveryDelayMs(delivery));
        return;
      }
      const x = new Uint8Array(answer.x.buffer, answer.x.byteOffset, answer.x.byteLength);
      const reply = await client.submitSolution(
        {
          ...header,
          jitter: answer.jitter ?? 0,
          conditionEstimate: answer.conditionEstimate ?? 0,
          seconds: answer.seconds ?? solveSeconds,
          sha256: createHash('sha256').update(x).digest('hex'),
          errorCode: '',
          errorMessage: '',
        },
        x,
      );
      record(reply.outcome, submitStarted);
      if (reply.outcome === 'committed' || reply.outcome === 'duplicate') {
        log(
          `${where}: ${reply.outcome} (solve ${solveSeconds.toFixed(2)} s, relative residual ${reply.relativeResidual.toExponential(1)})`,
        );
        msg.ack();
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
        msg.term(coded.code);
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
      await stopped;
    },
  };
}
