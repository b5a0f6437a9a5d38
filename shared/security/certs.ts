import 'reflect-metadata'; // @peculiar/x509 needs it loaded first
import { webcrypto } from 'node:crypto';

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

export interface IssueOptions {
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
