import { Worker } from 'node:worker_threads';

import { type ErrorCode, type ErrorFacts, GramfuseError } from './errors.js';

/**
 * Starts a worker thread from a module next to `base` (pass `import.meta.url`) named `name` without
 * extension. From the build (dist/) it is plain JavaScript; from TypeScript sources (tests, tsx) the
 * worker registers tsx's loader first, since workers do not inherit it.
 */
export function startWorker(base: string, name: string): Worker {
  const fromSource = base.endsWith('.ts');
  const url = new URL(`./${name}${fromSource ? '.ts' : '.js'}`, base);
  if (!fromSource) return new Worker(url);
  return new Worker(`import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(url.href)}); })`, {
    eval: true,
  });
}

/** What a worker posts back: progress while it works, then one result or one coded error. */
export type WorkerMessage<P, T> =
  | { readonly type: 'progress'; readonly progress: P }
  | { readonly type: 'result'; readonly result: T }
  | { readonly type: 'error'; readonly error: { readonly code: ErrorCode; readonly message: string; readonly facts: ErrorFacts } };

/** Posts `request` to a fresh worker and resolves with its one result; the worker is terminated afterwards. */
export async function callWorker<P, T>(base: string, name: string, request: unknown, onProgress?: (progress: P) => void): Promise<T> {
  const worker = startWorker(base, name);
  try {
    return await new Promise<T>((resolve, reject) => {
      worker.on('message', (message: WorkerMessage<P, T>) => {
        if (message.type === 'progress') onProgress?.(message.progress);
        else if (message.type === 'result') resolve(message.result);
        else reject(new GramfuseError(message.error.code, message.error.message, { facts: message.error.facts }));
      });
      worker.on('error', reject);
      worker.on('exit', (code) => reject(new Error(`the ${name} worker exited (code ${code}) before answering`)));
      worker.postMessage(request);
    });
  } finally {
    await worker.terminate();
  }
}

/**
 * One long-lived worker thread answering requests one at a time (the same messages as `callWorker`'s): for work
 * that repeats often enough that a fresh thread's start (module loading, often 100 ms or more) would dominate.
 * A worker that dies is replaced on the next call; `close` terminates it.
 */
export class PersistentWorker<P, T> {
  private worker: Worker | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly base: string,
    private readonly name: string,
  ) {}

  call(request: unknown, onProgress?: (progress: P) => void): Promise<T> {
    const run = this.queue.then(() => this.once(request, onProgress));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private once(request: unknown, onProgress?: (progress: P) => void): Promise<T> {
    const worker = (this.worker ??= startWorker(this.base, this.name));
    worker.unref();
    return new Promise<T>((resolve, reject) => {
      const done = (): void => {
        worker.off('message', message);
        worker.off('error', failed);
        worker.off('exit', exited);
      };
      const message = (m: WorkerMessage<P, T>): void => {
        if (m.type === 'progress') return onProgress?.(m.progress);
        done();
        if (m.type === 'result') resolve(m.result);
        else reject(new GramfuseError(m.error.code, m.error.message, { facts: m.error.facts }));
      };
      const failed = (error: Error): void => {
        done();
        this.worker = undefined;
        void worker.terminate();
        reject(error);
      };
      const exited = (code: number): void => {
        done();
        this.worker = undefined;
        reject(new Error(`the ${this.name} worker exited (code ${code}) before answering`));
      };
      worker.on('message', message);
      worker.on('error', failed);
      worker.on('exit', exited);
      worker.postMessage(request);
    });
  }

  async close(): Promise<void> {
    await this.queue;
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }
}
