import 'reflect-metadata'; // @peculiar/x509 needs it loaded first
import { createHash, webcrypto, X509Certificate } from 'node:crypto';

import * as x509 from '@peculiar/x509';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A certificate and its private key, PEM-encoded. */
export interface CertificateBundle {
  readonly certPem: string;
  readonly keyPem: string;
}

async function keyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .trimEnd()}\n-----END PRIVATE KEY-----\n`;
}

async function importKey(pem: string): Promise<CryptoKey> {
  const der = Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return webcrypto.subtle.importKey('pkcs8', der, algorithm, true, ['sign']);
}

const serial = (): string =>
  Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
    .toString('hex')
    .replace(/^[89a-f]/, '1');

/** A federation CA (ECDSA P-256, 10 years): it signs every participant's certificate. */
export async function createCertificateAuthority(name: string): Promise<CertificateBundle> {
  const keys: CryptoKeyPair = await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${name}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 10 * 365 * 24 * 3600 * 1000),
    keys,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await keyPem(keys.privateKey) };
}

/**
 * What a certificate is for, written by `gramfuse certs issue --role` into a gramfuse extension (and reflected in its
 * extended key usage: only `server` has serverAuth). Secure aggregation accepts only `owner` certificates as peers, so
 * the coordinator's server certificate, or a creator's, solver's or observer's, can never stand in for a data owner.
 */
export const CERTIFICATE_ROLES = ['owner', 'server', 'creator', 'solver', 'observer'] as const;
export type CertificateRole = (typeof CERTIFICATE_ROLES)[number];

/**
 * The gramfuse role extension, value a DER UTF8String role name. Its OID is an arc under 2.25 picked at random and kept
 * below 2³¹ (the ASN.1 library mis-encodes larger arcs, so a full 128-bit UUID arc cannot be used); it is not
 * registered: a registered one (a private enterprise number) should replace it before certificates outlive this release.
 */
export const ROLE_EXTENSION_OID = '2.25.1948302755.37.1';

const derUtf8 = (text: string): Uint8Array => {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.byteLength > 127) throw new RangeError('role name too long');
  return new Uint8Array([0x0c, bytes.byteLength, ...bytes]);
};

export interface IssueOptions {
  /** What the certificate is for. Default: `server` with `hosts`, `owner` without. */
  readonly role?: CertificateRole;
  /** Valid for this many days. Default 365. */
  readonly days?: number;
  /** Also a TLS server certificate for these host names / IPs (the coordinator). */
  readonly hosts?: readonly string[];
  /** Start of validity; default now (tests make expired certificates with a past date). */
  readonly notBefore?: Date;
}

/** A participant certificate signed by the CA; its subject common name is the participant's identity. */
export async function issueCertificate(ca: CertificateBundle, name: string, options: IssueOptions = {}): Promise<CertificateBundle> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await importKey(ca.keyPem);
  const keys: CryptoKeyPair = await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify']);
  const notBefore = options.notBefore ?? new Date(Date.now() - 60_000);
  const hosts = options.hosts ?? [];
  const role = options.role ?? (hosts.length > 0 ? 'server' : 'owner');
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${name}`,
    issuer: caCert.subject,
    notBefore,
    notAfter: new Date(notBefore.getTime() + (options.days ?? 365) * 24 * 3600 * 1000),
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension(
        hosts.length > 0 ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth] : [x509.ExtendedKeyUsage.clientAuth],
      ),
      new x509.Extension(ROLE_EXTENSION_OID, false, derUtf8(role)),
      ...(hosts.length > 0
        ? [
            new x509.SubjectAlternativeNameExtension(
              hosts.map((h) =>
                /^[\d.]+$/.test(h) || h.includes(':') ? { type: 'ip' as const, value: h } : { type: 'dns' as const, value: h },
              ),
            ),
          ]
        : []),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await keyPem(keys.privateKey) };
}

/** The subject common name of a PEM certificate. */
export function certificateName(certPem: string): string {
  const subject = new x509.X509Certificate(certPem).subject;
  return /CN=([^,]+)/.exec(subject)?.[1] ?? subject;
}

/** The gramfuse role a certificate was issued for, or undefined when it carries no (readable) role extension. */
export function certificateRole(certPem: string): CertificateRole | undefined {
  const ext = new x509.X509Certificate(certPem).getExtension(ROLE_EXTENSION_OID);
  if (ext === null) return undefined;
  const der = new Uint8Array(ext.value);
  if (der.byteLength < 2 || der[0] !== 0x0c || der[1] !== der.byteLength - 2) return undefined;
  const name = Buffer.from(der.subarray(2)).toString('utf8');
  return (CERTIFICATE_ROLES as readonly string[]).includes(name) ? (name as CertificateRole) : undefined;
}

/** Whether the certificate's extended key usage allows TLS server authentication (or it has no EKU, which allows all). */
export function certificateServesTls(certPem: string): boolean {
  const eku = new x509.X509Certificate(certPem).getExtension(x509.ExtendedKeyUsageExtension);
  return eku === null || eku.usages.some((u) => u === x509.ExtendedKeyUsage.serverAuth || u === '2.5.29.37.0');
}

/**
 * The two fingerprints an owner may pin a peer by: `sha256:<hex>` of the certificate (DER) and of its public key
 * (SubjectPublicKeyInfo DER, which survives re-issuing the certificate for the same key).
 */
export function certificateFingerprints(certPem: string): { readonly certificate: string; readonly publicKey: string } {
  const cert = new X509Certificate(certPem);
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  return {
    certificate: `sha256:${createHash('sha256').update(cert.raw).digest('hex')}`,
    publicKey: `sha256:${createHash('sha256').update(spki).digest('hex')}`,
  };
}
