/** shared/nats/: NATS JetStream: the job event bus and the audit ledger mirror (both sides publish their ledgers). */
export {
  AUDIT_STREAM,
  connectNats,
  ensureStreams,
  JOBS_STREAM,
  type NatsEndpoint,
  natsError,
  type NatsOptions,
  type NatsTarget,
  natsUrl,
} from './connection.js';
export { eventOf, NatsEventBus } from './event-bus.js';
export { AuditPublisher, auditSubject, type LedgerSource } from './audit-publisher.js';
export { readAuditStream, type StreamLedger } from './audit-stream.js';
export {
  DEFAULT_SOLVE_QUEUE,
  ensureSolveQueue,
  MAX_DELIVERIES_ADVISORY,
  MSG_TERMINATED_ADVISORY,
  parseSolveAdvisory,
  parseSolveTask,
  SolveAdvisory,
  SOLVE_CONSUMER,
  SOLVE_STREAM,
  type SolveQueueSettings,
  solveSubject,
  SolveTask,
  solveTaskId,
} from './solve-queue.js';
