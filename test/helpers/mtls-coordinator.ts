import { type CoordinatorServer, type CoordinatorServerOptions, startCoordinatorServer } from '../../coordinator/index.js';
import { type CertificateBundle, createCertificateAuthority, issueCertificate } from '../../shared/security/index.js';

/** An in-process coordinator on loopback with real mTLS: a fresh CA, one certificate per identity. */
export interface MtlsCoordinator {
  readonly ca: CertificateBundle;
  readonly server: CoordinatorServer;
  readonly address: string;
  /** An identity's certificate (issued at start). */
  readonly cert: (name: string) => CertificateBundle;
  /** The client TLS options of an identity. */
  readonly tlsOf: (name: string) => { caPem: string; certPem: string; keyPem: string };
}

/**
 * Starts one: `creator` may create jobs; every name in `identities` (and `creator`) gets a certificate.
 * `options` are passed to startCoordinatorServer (state dir, template dirs, …).
 */
export async function startMtlsCoordinator(
  caName: string,
  identities: readonly string[],
  options: Omit<CoordinatorServerOptions, 'listen' | 'tls'>,
): Promise<MtlsCoordinator> {
  const ca = await createCertificateAuthority(caName);
  const serverCert = await issueCertificate(ca, 'coordinator', { hosts: ['localhost', '127.0.0.1'] });
  const certs = new Map<string, CertificateBundle>();
  for (const name of ['creator', ...identities]) certs.set(name, await issueCertificate(ca, name));
  const server = await startCoordinatorServer({
    creators: ['creator'],
    ...options,
    listen: '127.0.0.1:0',
    tls: { caPem: ca.certPem, certPem: serverCert.certPem, keyPem: serverCert.keyPem },
  });
  const cert = (name: string): CertificateBundle => certs.get(name)!;
  return {
    ca,
    server,
    address: `localhost:${server.port}`,
    cert,
    tlsOf: (name) => ({ caPem: ca.certPem, certPem: cert(name).certPem, keyPem: cert(name).keyPem }),
  };
}
