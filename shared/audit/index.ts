export { AuditKind, AuditRecord, FileLedger, keyId, verifyLedger } from './ledger.js';
