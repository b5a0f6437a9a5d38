export { AUDIT_STREAM, connectNats, ensureStreams, JOBS_STREAM, type NatsOptions } from './connection.js';
export { NatsEventBus } from './event-bus.js';
export { AuditPublisher, auditSubject, type LedgerSource } from './audit-publisher.js';
export { readAuditStream, type StreamLedger } from './audit-stream.js';
