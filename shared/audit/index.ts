/** shared/audit/: the signed, hash-chained audit ledger (a file; mirrored to NATS by shared/nats) and its verification. */
export { AuditKind, AuditRecord, FileLedger, keyId, readLedgerRecords, verifyLedger, verifyLedgerText } from './ledger.js';
export { type OwnerReport, ownerReport, type Reconciliation, reconcileLedgers } from './report.js';
