// The agent's worker thread: every onnxruntime session of the agent lives here, because run() blocks
// the thread that calls it; the main thread stays free for gRPC keepalives, NATS heartbeats and signals.
import { parentPort } from 'node:worker_threads';

import { toGramfuseError } from '../../shared/index.js';
import { analyzeRequest, type CollectionRequest, runCollectionJob } from './collection-job.js';

export type WorkerRequest =
  { readonly type: 'analyze'; readonly modelPath: string } | { readonly type: 'collect'; readonly request: CollectionRequest };

const port = parentPort;
if (port === null) throw new Error('inference-worker.ts runs only as a worker thread');

port.on('message', (message: WorkerRequest) => {
  void (async () => {
    try {
      if (message.type === 'analyze') {
        port.postMessage({ type: 'result', result: await analyzeRequest(message.modelPath) });
      } else {
        let last = 0;
        const result = await runCollectionJob(message.request, (progress) => {
          const now = Date.now();
          if (now - last > 100 || progress.examples === progress.total) {
            last = now;
            port.postMessage({ type: 'progress', progress });
          }
        });
        port.postMessage({ type: 'result', result });
      }
    } catch (error) {
      const coded = toGramfuseError(error);
      port.postMessage({ type: 'error', error: { code: coded.code, message: coded.message, facts: coded.facts } });
    }
  })();
});
