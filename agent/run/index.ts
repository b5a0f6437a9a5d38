/** agent/run/: `gramfuse agent run`, the federated half of the agent (approval, upload, receipts, its ledger). */
export { openAgentLedger } from './ledger.js';
export { runAgent, type RunAgentOptions, type RunAgentResult } from './run-agent.js';
export { checkApprovedBefore, SecureSession, type SecureSessionOptions } from './secure-aggregation.js';
