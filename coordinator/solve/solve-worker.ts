// The coordinator's solve worker thread: see solve-job.ts.
import { parentPort } from 'node:worker_threads';

import { toGramfuseError } from '../../shared/index.js';
import { runSolveJob, type SolveRequest } from './solve-job.js';

const port = parentPort;
if (port === null) throw new Error('solve-worker.ts runs only as a worker thread');

port.on('message', (request: SolveRequest) => {
  void (async () => {
    try {
      const result = await runSolveJob(request, (progress) => port.postMessage({ type: 'progress', progress }));
      port.postMessage({ type: 'result', result });
    } catch (error) {
      const coded = toGramfuseError(error);
      port.postMessage({ type: 'error', error: { code: coded.code, message: coded.message, facts: coded.facts } });
    }
  })();
});
