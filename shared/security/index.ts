/** shared/security/: certificates (mTLS), Ed25519 signatures over canonical JSON, private key files (0600). */
export {
  type CertificateBundle,
  certificateFingerprints,
  certificateName,
  certificateRole,
  type CertificateRole,
  CERTIFICATE_ROLES,
  certificateServesTls,
  createCertificateAuthority,
  issueCertificate,
  type IssueOptions,
  ROLE_EXTENSION_OID,
} from './certs.js';
export { canonicalJson, generateSigningKeys, signFields, type SigningKeys, verifyFields } from './receipts.js';
export { readPrivateFile, signingKeysAt, writePrivateFile } from './key-files.js';
