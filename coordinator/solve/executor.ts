import { callWorker } from '../../shared/index.js';
import type { SolveOutcome, SolveProgress, SolveRequest } from './solve-job.js';

/**
 * Where a job's solve runs. The coordinator hands it the request (state directory, job, owners and their committed
 * statistics) and awaits the outcome; progress is forwarded to the job's watchers. Implementations must leave the
 * result in `jobs/<id>/result/` of the state directory and may resume from `jobs/<id>/solve/`.
 */
export interface SolveExecutor {
  /** For logs: e.g. `worker-thread`. */
  readonly name: string;
  solve(request: SolveRequest, onProgress: (progress: SolveProgress) => void): Promise<SolveOutcome>;
}

/** The default: a worker thread of this process (onnxruntime's run() blocks its thread; gRPC keeps being served). */
export const workerThreadExecutor: SolveExecutor = {
  name: 'worker-thread',
  solve: (request, onProgress) => callWorker<SolveProgress, SolveOutcome>(import.meta.url, 'solve-worker', request, onProgress),
};
