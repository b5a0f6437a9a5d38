import { callWorker } from '../../shared/index.js';
import { type ModelAnalysis } from '../../shared/onnx/index.js';
import type { Progress } from './collect.js';
import type { CollectionRequest, CollectionResult } from './collection-job.js';
import type { WorkerRequest } from './inference-worker.js';

function call<T>(request: WorkerRequest, onProgress?: (progress: Progress) => void): Promise<T> {
  return callWorker<Progress, T>(import.meta.url, 'inference-worker', request, onProgress);
}

/** Analyses a model in the worker (the probe run is inference). */
export function analyzeInWorker(modelPath: string): Promise<ModelAnalysis> {
  return call<ModelAnalysis>({ type: 'analyze', modelPath });
}

/** Runs the collection job in the worker, reporting progress on the main thread. */
export function collectInWorker(request: CollectionRequest, onProgress?: (progress: Progress) => void): Promise<CollectionResult> {
  return call<CollectionResult>({ type: 'collect', request }, onProgress);
}
