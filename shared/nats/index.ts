/** shared/nats/: NATS JetStream: the job event bus and the audit ledger mirror (both sides publish their ledgers). */
export { AUDIT_STREAM, connectNats, ensureStreams, JOBS_STREAM, type NatsOptions } from './connection.js';
export { NatsEventBus } from './event-bus.js';
export { AuditPublisher, auditSubject, type LedgerSource } from './audit-publisher.js';
export { readAuditStream, type StreamLedger } from './audit-stream.js';
