// The distributed solve's worker thread: task preparation or a solution's check (tasks.ts), one request per thread.
import { parentPort } from 'node:worker_threads';

import { toGramfuseError } from '../../shared/index.js';
import { type CheckRequest, checkSolution, prepareSolveTasks } from './tasks.js';
import type { SolveRequest } from './solve-job.js';

const port = parentPort;
if (port === null) throw new Error('task-worker.ts runs only as a worker thread');

export type TaskWorkerRequest =
  { readonly kind: 'prepare'; readonly request: SolveRequest } | { readonly kind: 'check'; readonly request: CheckRequest };

port.on('message', (message: TaskWorkerRequest) => {
  void (async () => {
    try {
      const result =
        message.kind === 'prepare'
          ? await prepareSolveTasks(message.request, (task) => port.postMessage({ type: 'progress', progress: task }))
          : await checkSolution(message.request);
      port.postMessage({ type: 'result', result });
    } catch (error) {
      const coded = toGramfuseError(error);
      port.postMessage({ type: 'error', error: { code: coded.code, message: coded.message, facts: coded.facts } });
    }
  })();
});
