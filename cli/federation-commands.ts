import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { parse as parseYaml } from 'yaml';

import type { ClientTls, ConnectOptions } from '../client/index.js';
import type { ServerTls } from '../coordinator/index.js';
import { ErrorCode, fileError, GramfuseError } from '../shared/index.js';
import {
  type CertificateRole,
  createCertificateAuthority,
  issueCertificate,
  readPrivateFile,
  writePrivateFile,
} from '../shared/security/index.js';

/** TLS flags shared by every command that talks to or serves the federation. */
export interface TlsFlags {
  readonly tlsCa?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly insecureLoopback?: boolean;
  readonly identity?: string;
}

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw fileError(error, path, `reading the ${what}`);
  }
}

export async function loadTls(flags: TlsFlags): Promise<ClientTls & ServerTls> {
  if (flags.tlsCa === undefined || flags.tlsCert === undefined || flags.tlsKey === undefined) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      '--tls-ca, --tls-cert and --tls-key are all required (mTLS); create them with `gramfuse certs init` and `gramfuse certs issue`, or pass --insecure-loopback for a local demo',
    );
  }
  return {
    caPem: await readPem(flags.tlsCa, 'CA certificate'),
    certPem: await readPem(flags.tlsCert, 'certificate'),
    keyPem: await readPrivateFile(flags.tlsKey, 'private key'),
  };
}

export async function connectOptions(address: string, flags: TlsFlags): Promise<ConnectOptions> {
  if (flags.insecureLoopback === true) {
    if (flags.identity === undefined)
      throw new GramfuseError(ErrorCode.InvalidArgument, '--identity: insecure loopback mode needs the identity to claim');
    return { address, insecureIdentity: flags.identity };
  }
  return { address, tls: await loadTls(flags) };
}

/** `gramfuse certs init`: a federation CA (its key stays where it is made). */
export async function certsInit(dir: string, name: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const ca = await createCertificateAuthority(name);
  await writeFile(join(dir, 'ca.pem'), ca.certPem);
  await writePrivateFile(join(dir, 'ca-key.pem'), ca.keyPem, 'writing the CA key');
  return [join(dir, 'ca.pem'), join(dir, 'ca-key.pem')];
}

/**
 * `gramfuse certs issue`: a certificate with its role (default: `server` with hosts, `owner` without). Secure
 * aggregation accepts only owner certificates as peers, so issue creators, solvers and observers with their role.
 */
export async function certsIssue(dir: string, name: string, hosts: readonly string[], role?: CertificateRole): Promise<string[]> {
  const ca = {
    certPem: await readPem(join(dir, 'ca.pem'), 'CA certificate'),
    keyPem: await readPrivateFile(join(dir, 'ca-key.pem'), 'CA key'),
  };
  const cert = await issueCertificate(ca, name, { hosts, ...(role === undefined ? {} : { role }) });
  await writeFile(join(dir, `${name}.pem`), cert.certPem);
  await writePrivateFile(join(dir, `${name}-key.pem`), cert.keyPem);
  return [join(dir, `${name}.pem`), join(dir, `${name}-key.pem`)];
}

/** The `--tls-ca/--tls-cert/--tls-key` flags for `name` in a certificate directory laid out as `gramfuse certs` writes it (ca.pem, NAME.pem, NAME-key.pem). */
export function certsFlags(dir: string, name: string): string[] {
  return ['--tls-ca', join(dir, 'ca.pem'), '--tls-cert', join(dir, `${name}.pem`), '--tls-key', join(dir, `${name}-key.pem`)];
}

/** A job spec file's content: YAML (.yaml/.yml) or JSON; the coordinator validates it with zod. */
export function parseSpecText(text: string, path: string): unknown {
  const yaml = /\.ya?ml$/i.test(path);
  try {
    return yaml ? (parseYaml(text) as unknown) : (JSON.parse(text) as unknown);
  } catch (error) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `${path}: not valid ${yaml ? 'YAML' : 'JSON'} (${(error as Error).message.split('\n')[0]})`,
      { facts: { path } },
    );
  }
}
