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
