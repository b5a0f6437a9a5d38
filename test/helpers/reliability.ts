import { appendFileSync } from 'node:fs';

/**
 * Records one injected fault and its outcome when GRAMFUSE_RELIABILITY_LOG names a file (scripts/reliability.mjs
 * sets it and turns the records into docs/RELIABILITY.md). Without the variable it does nothing.
 */
export function recordFault(fault: string, outcome: string, injected = 1): void {
  const path = process.env.GRAMFUSE_RELIABILITY_LOG;
  if (path === undefined || path === '') return;
  appendFileSync(path, `${JSON.stringify({ fault, outcome, injected })}\n`);
}
