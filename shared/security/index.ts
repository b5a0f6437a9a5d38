/** shared/security/: certificates (mTLS), Ed25519 signatures over canonical JSON, private key files (0600). */
export { type CertificateBundle, certificateName, createCertificateAuthority, issueCertificate, type IssueOptions } from './certs.js';
export { canonicalJson, generateSigningKeys, signFields, type SigningKeys, verifyFields } from './receipts.js';
export { readPrivateFile, signingKeysAt, writePrivateFile } from './key-files.js';
