// The solver worker's solve thread: onnxruntime's run() blocks the thread that calls it, and the worker's main thread
// must keep sending in-progress acks to JetStream and talking gRPC while a group solves. One solver (its kernel
// sessions) lives as long as the thread, so a task pays no session start-up.
import { parentPort } from 'node:worker_threads';

import { faultInjected, toGramfuseError } from '../shared/index.js';
import { createOrtSolver, type SpdSolver, unpackSymmetric } from '../shared/linalg/index.js';

const port = parentPort;
if (port === null) throw new Error('solve-thread.ts runs only as a worker thread');

export interface ThreadSetup {
  readonly device: 'cpu' | 'cuda';
  readonly threads?: number;
}

export interface ThreadTask {
  readonly id: number;
  readonly n: number;
  readonly rhs: number;
  readonly packed: Float64Array;
  readonly r: Float64Array;
  readonly label: string;
  /** Fault injection (GRAMFUSE_FAULT=solver.thread-dies): the thread exits on receiving the task, before solving. */
  readonly die?: boolean;
  /** Fault injection (GRAMFUSE_FAULT=solver.thread-hangs): the thread never answers, as a kernel that does not return. */
  readonly hang?: boolean;
  /**
   * Fault injection (GRAMFUSE_FAULT=solver.over-jitter): the worker chooses its own system, Σ G̃ + this × mean
   * diagonal, solves it exactly and says so; the coordinator must refuse a jitter it would not have used.
   */
  readonly overJitter?: number;
}

export interface ThreadAnswer {
  readonly id: number;
  readonly x?: Float64Array;
  readonly jitter?: number;
  readonly conditionEstimate?: number;
  readonly seconds?: number;
  readonly error?: { readonly code: string; readonly message: string };
}

let solver: Promise<SpdSolver> | undefined;

port.on('message', (message: { setup: ThreadSetup } | { task: ThreadTask } | { release: true }) => {
  void (async () => {
    if ('setup' in message) {
      const { device, threads } = message.setup;
      // The coordinator's in-process setting (arena off above SMALL_SOLVE), so answers are the bytes it would compute.
      solver = createOrtSolver({ memoryArena: false, device, ...(threads === undefined ? {} : { threads }) });
      return;
    }
    if ('release' in message) {
      await (await solver)?.release();
      port.postMessage({ released: true });
      return;
    }
    // An uncaught error between runs ends this thread only (terminating it during an onnxruntime run aborts the
    // whole process, so the fault is injected here rather than by terminate()).
    if (message.task.die === true) {
      setImmediate(() => {
        throw new Error('fault injected: solver.thread-dies');
      });
      return;
    }
    // The worker's watchdog must notice a thread that never answers.
    if (message.task.hang === true) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    const { id, n, rhs, packed, r, label } = message.task;
    try {
      if (solver === undefined) throw new Error('the solve thread was not set up');
      const a = unpackSymmetric(packed, n);
      const overJitter = message.task.overJitter ?? 0;
      if (overJitter > 0) {
        let mean = 0;
        for (let i = 0; i < n; i++) mean += a[i * n + i]! / n;
        for (let i = 0; i < n; i++) a[i * n + i] = a[i * n + i]! + overJitter * mean;
      }
      const result = await (await solver).solve(a, n, r, rhs, label);
      const x = result.x;
      // Fault injection (tests): a wrong answer, which the coordinator's residual check must refuse.
      if (faultInjected('solver.wrong-solution')) for (let i = 0; i < x.length; i++) x[i] = x[i]! * 1.01 + 1e-3;
      const jitter = overJitter > 0 && result.jitter === 0 ? overJitter : result.jitter;
      const answer: ThreadAnswer = { id, x, jitter, conditionEstimate: result.conditionEstimate, seconds: result.seconds };
      port.postMessage(answer, [x.buffer as ArrayBuffer]);
    } catch (error) {
      const coded = toGramfuseError(error);
      port.postMessage({ id, error: { code: coded.code, message: coded.message } } satisfies ThreadAnswer);
    }
  })();
});
