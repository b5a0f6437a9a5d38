import { Worker } from 'node:worker_threads';

import { type ErrorCode, type ErrorFacts, GramfuseError, type ModelAnalysis } from '../shared/index.js';
import type { Progress } from './collect.js';
import type { CollectionRequest, CollectionResult } from './collection-job.js';
import type { WorkerRequest } from './inference-worker.js';

/**
 * Starts the inference worker. From the build (dist/) it is plain JavaScript; from TypeScript sources
 * (tests, tsx) the worker registers tsx's loader first, since workers do not inherit it.
 */
function startWorker(): Worker {
  const fromSource = import.meta.url.endsWith('.ts');
  const url = new URL(fromSource ? './inference-worker.ts' : './inference-worker.js', import.meta.url);
  if (!fromSource) return new Worker(url);
  return new Worker(`import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(url.href)}); })`, {
    eval: true,
  });
}

async function call<T>(request: WorkerRequest, onProgress?: (progress: Progress) => void): Promise<T> {
  const worker = startWorker();
  try {
    return await new Promise<T>((resolve, reject) => {
      worker.on(
        'message',
        (
          message:
            | { type: 'progress'; progress: Progress }
            | { type: 'result'; result: T }
            | { type: 'error'; error: { code: ErrorCode; message: string; facts: ErrorFacts } },
        ) => {
          if (message.type === 'progress') onProgress?.(message.progress);
          else if (message.type === 'result') resolve(message.result);
          else reject(new GramfuseError(message.error.code, message.error.message, { facts: message.error.facts }));
        },
      );
      worker.on('error', reject);
      worker.on('exit', (code) => reject(new Error(`the inference worker exited (code ${code}) before answering`)));
      worker.postMessage(request);
    });
  } finally {
    await worker.terminate();
  }
}

/** Analyses a model in the worker (the probe run is inference). */
export function analyzeInWorker(modelPath: string): Promise<ModelAnalysis> {
  return call<ModelAnalysis>({ type: 'analyze', modelPath });
}

/** Runs the collection job in the worker, reporting progress on the main thread. */
export function collectInWorker(request: CollectionRequest, onProgress?: (progress: Progress) => void): Promise<CollectionResult> {
  return call<CollectionResult>({ type: 'collect', request }, onProgress);
}
