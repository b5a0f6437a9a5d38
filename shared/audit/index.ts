export { AuditKind, AuditRecord, FileLedger, keyId, readLedgerRecords, verifyLedger, verifyLedgerText } from './ledger.js';
