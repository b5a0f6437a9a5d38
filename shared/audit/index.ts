export { AuditKind, AuditRecord, FileLedger, keyId, verifyLedger, verifyLedgerText } from './ledger.js';
