// `gramfuse doctor`: the preflight an operator runs before starting a service (as NVIDIA FLARE's preflight check).
// Every check ends in one line, ok / warn / fail with the fix; nothing here throws for a problem it is meant to find.
import { constants } from 'node:fs';
import { access, readFile, stat, statfs } from 'node:fs/promises';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { freemem } from 'node:os';

import { connectFederation } from '../client/index.js';
import { ErrorCode, formatBytes, GramfuseError, toGramfuseError } from '../shared/index.js';
import { connectNats, type NatsEndpoint, natsUrl } from '../shared/nats/index.js';
import { certificateName, certificateRole, type CertificateRole } from '../shared/security/index.js';

/** The services doctor checks a machine for. */
export const DOCTOR_ROLES = ['coordinator', 'agent', 'solver', 'observer'] as const;
export type DoctorRole = (typeof DOCTOR_ROLES)[number];

export type CheckStatus = 'ok' | 'warn' | 'fail';

/** One check's outcome: `fix` says what to do about a warn or fail (absent for ok). */
export interface DoctorCheck {
  readonly name: string;
  readonly status: CheckStatus;
  readonly detail: string;
  readonly fix?: string;
}

export interface DoctorOptions {
  readonly role: DoctorRole;
  /** The federation CA, this party's certificate and its key (PEM paths), as the service takes them. */
  readonly tlsCa?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  /** The coordinator to call over mTLS (host:port). The coordinator's own doctor gives the address agents use. */
  readonly coordinator?: string;
  /** NATS and this role's credentials (connected, then closed). */
  readonly nats?: NatsEndpoint;
  /** The directory the service writes (state dir, work dir). */
  readonly workDir: string;
  /** Below this much free disk in `workDir`: warn. */
  readonly minFreeDiskBytes: number;
  /** Below this much available memory: warn. */
  readonly minFreeMemoryBytes: number;
  /** Under this many days left on the certificate: warn. @default 30 */
  readonly expiryWarnDays?: number;
  /** Deadline of the coordinator call, seconds. @default 5 */
  readonly deadlineSeconds?: number;
  /** @default now */
  readonly now?: Date;
}

/** The certificate role (shared/security/certs.ts) each service must hold. */
const CERTIFICATE_ROLE: Readonly<Record<DoctorRole, CertificateRole>> = {
  coordinator: 'server',
  agent: 'owner',
  solver: 'solver',
  observer: 'observer',
};

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const DAY_MS = 24 * 3600 * 1000;

const ok = (name: string, detail: string): DoctorCheck => ({ name, status: 'ok', detail });
const warn = (name: string, detail: string, fix: string): DoctorCheck => ({ name, status: 'warn', detail, fix });
const fail = (name: string, detail: string, fix: string): DoctorCheck => ({ name, status: 'fail', detail, fix });

const issueFix = (role: DoctorRole, name = 'NAME'): string =>
  `issue one with \`gramfuse certs issue --dir CA_DIR --name ${name} --role ${CERTIFICATE_ROLE[role]}${role === 'coordinator' ? ' --host HOST' : ''}\``;

async function readText(path: string): Promise<string | Error> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    return error as Error;
  }
}

function parseCertificate(pem: string): X509Certificate | Error {
  try {
    return new X509Certificate(pem);
  } catch (error) {
    return error as Error;
  }
}

/** Runs every check that the options give material for, in a fixed order. */
export async function runDoctor(options: DoctorOptions): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  const tls = await certificateChecks(options, checks);
  checks.push(await coordinatorCheck(options, tls));
  const nats = await natsCheck(options);
  if (nats !== undefined) checks.push(nats);
  checks.push(...(await resourceChecks(options)));
  const cuda = await cudaCheck(options.role);
  if (cuda !== undefined) checks.push(cuda);
  return checks;
}

interface TlsMaterial {
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
}

/** certificate.*, key.*: the chain, role, names, expiry, key permissions and match. Returns the material when readable. */
async function certificateChecks(options: DoctorOptions, checks: DoctorCheck[]): Promise<TlsMaterial | undefined> {
  const { role } = options;
  const missing = (['tlsCa', 'tlsCert', 'tlsKey'] as const)
    .filter((key) => options[key] === undefined)
    .map((key) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
  if (missing.length > 0) {
    checks.push(
      fail(
        'certificate.files',
        `${missing.join(', ')} not given: the ${role} speaks mTLS with the federation CA, its certificate and its key`,
        `pass the files the service uses; make them with \`gramfuse certs init\` and ${issueFix(role)}`,
      ),
    );
    return undefined;
  }
  const [caText, certText, keyText] = await Promise.all([readText(options.tlsCa!), readText(options.tlsCert!), readText(options.tlsKey!)]);
  const unreadable = (
    [
      ['--tls-ca', options.tlsCa!, caText],
      ['--tls-cert', options.tlsCert!, certText],
      ['--tls-key', options.tlsKey!, keyText],
    ] as const
  ).filter(([, , text]) => text instanceof Error);
  if (unreadable.length > 0) {
    checks.push(
      fail(
        'certificate.files',
        unreadable.map(([flag, path, error]) => `${flag} ${path}: ${(error as Error).message}`).join('; '),
        'check the paths and that this user may read them',
      ),
    );
    return undefined;
  }
  const ca = parseCertificate(caText as string);
  const cert = parseCertificate(certText as string);
  if (ca instanceof Error || cert instanceof Error) {
    checks.push(
      fail(
        'certificate.files',
        [
          ca instanceof Error ? `--tls-ca ${options.tlsCa}: not a PEM certificate (${ca.message})` : '',
          cert instanceof Error ? `--tls-cert ${options.tlsCert}: not a PEM certificate (${cert.message})` : '',
        ]
          .filter((s) => s !== '')
          .join('; '),
        'give the PEM files `gramfuse certs init|issue` wrote (ca.pem, NAME.pem)',
      ),
    );
    return undefined;
  }
  checks.push(ok('certificate.files', `${options.tlsCa}, ${options.tlsCert}, ${options.tlsKey} read`));
  const identity = certificateName(certText as string);

  // The chain: issued by this CA (names and signature), and the CA a CA.
  if (!ca.ca)
    checks.push(
      fail(
        'certificate.chain',
        `--tls-ca ${options.tlsCa} (${ca.subject}) is not a CA certificate`,
        'pass the federation CA (ca.pem of `gramfuse certs init`)',
      ),
    );
  else if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey))
    checks.push(
      fail(
        'certificate.chain',
        `${options.tlsCert} (CN=${identity}, issuer ${cert.issuer.replaceAll('\n', ', ')}) was not signed by the CA in --tls-ca ${options.tlsCa} (${ca.subject.replaceAll('\n', ', ')})`,
        "pass the federation's ca.pem as --tls-ca, or have this certificate re-issued by that CA",
      ),
    );
  else checks.push(ok('certificate.chain', `CN=${identity} signed by ${ca.subject.replaceAll('\n', ', ')}`));

  // The role: the gramfuse role extension and the extended key usage this service needs.
  const found = certificateRole(certText as string);
  const wanted = CERTIFICATE_ROLE[role];
  const usages = cert.keyUsage ?? [];
  const eku = (oid: string): boolean => usages.length === 0 || usages.includes(oid) || usages.includes('2.5.29.37.0');
  if (found !== undefined && found !== wanted)
    checks.push(
      fail(
        'certificate.role',
        `${identity}'s certificate was issued for role ${found}; the ${role} needs role ${wanted}`,
        issueFix(role, identity),
      ),
    );
  else if (role === 'coordinator' && !eku(SERVER_AUTH))
    checks.push(
      fail('certificate.role', `${identity}'s certificate does not allow TLS server authentication (serverAuth)`, issueFix(role, identity)),
    );
  else if (!eku(CLIENT_AUTH))
    checks.push(
      fail('certificate.role', `${identity}'s certificate does not allow TLS client authentication (clientAuth)`, issueFix(role, identity)),
    );
  else if (found === undefined)
    checks.push(
      warn(
        'certificate.role',
        `${identity}'s certificate carries no gramfuse role (issued before roles existed)`,
        `re-issue it with its role: ${issueFix(role, identity)}; secure aggregation accepts only owner certificates as peers`,
      ),
    );
  else checks.push(ok('certificate.role', `role ${found}${role === 'coordinator' ? ', serverAuth' : ', clientAuth'}`));

  // Names: the identity, and for the coordinator the host names clients dial.
  const sans = cert.subjectAltName ?? '';
  if (role === 'coordinator') {
    const host = options.coordinator === undefined ? undefined : hostOf(options.coordinator);
    if (sans === '')
      checks.push(fail('certificate.names', `${identity}'s certificate names no host (no subjectAltName)`, issueFix(role, identity)));
    else if (host !== undefined && (isIP(host) === 0 ? cert.checkHost(host) : cert.checkIP(host)) === undefined)
      checks.push(
        fail(
          'certificate.names',
          `clients dial ${host}, which the certificate does not name (${sans})`,
          `re-issue it with --host ${host}, or give clients an address it names`,
        ),
      );
    else checks.push(ok('certificate.names', `identity ${identity}; hosts ${sans}`));
  } else checks.push(ok('certificate.names', `identity ${identity} (the coordinator and jobs name this party so)`));

  // Validity: fail outside it, warn within expiryWarnDays of the end.
  const now = options.now ?? new Date();
  const from = new Date(cert.validFrom);
  const to = new Date(cert.validTo);
  const days = (to.getTime() - now.getTime()) / DAY_MS;
  if (now < from)
    checks.push(
      fail(
        'certificate.expiry',
        `not valid before ${from.toISOString()} (now ${now.toISOString()})`,
        "check this machine's clock, or wait until then",
      ),
    );
  else if (now > to)
    checks.push(
      fail('certificate.expiry', `expired ${to.toISOString()} (${Math.floor(-days)} days ago)`, `renew it: ${issueFix(role, identity)}`),
    );
  else if (days < (options.expiryWarnDays ?? 30))
    checks.push(
      warn('certificate.expiry', `expires ${to.toISOString()} (in ${Math.floor(days)} days)`, `renew it soon: ${issueFix(role, identity)}`),
    );
  else checks.push(ok('certificate.expiry', `valid until ${to.toISOString()} (${Math.floor(days)} days)`));
  if (now > new Date(ca.validTo))
    checks.push(
      fail(
        'certificate.chain',
        `the CA certificate expired ${new Date(ca.validTo).toISOString()}`,
        'make a new federation CA and re-issue every certificate',
      ),
    );

  // The key: private (0600, as readPrivateFile demands at run time) and the certificate's.
  const mode = (await stat(options.tlsKey!)).mode & 0o777;
  if ((mode & 0o077) !== 0)
    checks.push(
      fail(
        'key.permissions',
        `${options.tlsKey} is accessible by group or others (mode ${mode.toString(8).padStart(4, '0')}); the service refuses it (KEY_FILE_EXPOSED)`,
        `chmod 600 ${options.tlsKey}`,
      ),
    );
  else checks.push(ok('key.permissions', `${options.tlsKey} mode ${mode.toString(8).padStart(4, '0')}`));
  let matches: boolean | Error;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(keyText as string));
  } catch (error) {
    matches = error as Error;
  }
  if (matches instanceof Error)
    checks.push(
      fail(
        'key.match',
        `${options.tlsKey} is not a PEM private key (${matches.message})`,
        `give the NAME-key.pem written with the certificate`,
      ),
    );
  else if (!matches)
    checks.push(
      fail(
        'key.match',
        `${options.tlsKey} is not the key of ${options.tlsCert}`,
        `give the key issued with this certificate (${identity}-key.pem)`,
      ),
    );
  else checks.push(ok('key.match', `the key belongs to CN=${identity}`));
  return { caPem: caText as string, certPem: certText as string, keyPem: keyText as string };
}

function hostOf(address: string): string {
  const at = address.lastIndexOf(':');
  const host = at < 0 ? address : address.slice(0, at);
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/** coordinator: answers over mTLS and lets this identity in (ListJobs, the cheapest call every identity may make). */
async function coordinatorCheck(options: DoctorOptions, tls: TlsMaterial | undefined): Promise<DoctorCheck> {
  if (options.coordinator === undefined)
    return warn('coordinator', 'not checked: no --coordinator', 'pass --coordinator HOST:PORT (the address this service uses)');
  if (tls === undefined)
    return fail(
      'coordinator',
      `not called: no readable certificate for mTLS to ${options.coordinator}`,
      'fix the certificate.files line first',
    );
  let client: ReturnType<typeof connectFederation> | undefined;
  try {
    client = connectFederation({ address: options.coordinator, tls, deadlineSeconds: options.deadlineSeconds ?? 5 });
    const jobs = await client.listJobs();
    const named = jobs.filter((job) => job.participants.includes(client!.identity)).length;
    return ok(
      'coordinator',
      `${options.coordinator} answered over mTLS as ${client.identity}: ${jobs.length} job(s) visible${options.role === 'agent' ? `, ${named} listing ${client.identity} as a participant` : ''}`,
    );
  } catch (error) {
    const coded = toGramfuseError(error);
    // NOT_AUTHORIZED is gramfuse's own refusal; a bare PERMISSION_DENIED (7) or UNAUTHENTICATED (16), e.g. from a
    // proxy in front of the coordinator, reaches the client as a remote error carrying that status.
    if (coded.code === ErrorCode.NotAuthorized || /\(gRPC status (7|16)\)/.test(coded.message))
      return fail(
        'coordinator',
        `${options.coordinator} refused ${certificateName(tls.certPem)}: ${coded.message}`,
        "ask the coordinator's operator to list this identity (--creators, --solver-identities, --observers, or as a job participant)",
      );
    return fail(
      'coordinator',
      `${options.coordinator} did not answer over mTLS (${coded.code}: ${coded.message})`,
      'check that the coordinator runs there, that its certificate names that host and chains to --tls-ca, and that this certificate is valid and from the same CA',
    );
  } finally {
    client?.close();
  }
}

/** nats: connect with the role's credentials, then close. Only a solver must have NATS. */
async function natsCheck(options: DoctorOptions): Promise<DoctorCheck | undefined> {
  if (options.nats === undefined)
    return options.role === 'solver'
      ? fail(
          'nats',
          'no --nats: a solver pulls its tasks from NATS JetStream',
          "pass --nats URL with --nats-tls-ca and the solver's --nats-creds",
        )
      : undefined;
  const url = natsUrl(options.nats);
  try {
    const nc = await connectNats(options.nats, { name: `gramfuse doctor (${options.role})`, timeoutMs: 3000 });
    await nc.close();
    const how =
      options.nats.creds !== undefined
        ? 'credentials file'
        : options.nats.user !== undefined
          ? `user ${options.nats.user}`
          : 'no credentials';
    const secure = options.nats.tlsCa !== undefined ? 'TLS' : 'plain text';
    if (options.nats.creds === undefined && options.nats.user === undefined)
      return warn(
        'nats',
        `${url} accepted an anonymous client over ${secure}: fit only for a local nats-server`,
        "in production run nats-server with deploy/nats-server.conf and pass this role's --nats-creds",
      );
    return ok('nats', `${url} accepted this ${options.role}'s ${how} over ${secure}`);
  } catch (error) {
    const coded = error instanceof GramfuseError ? error : toGramfuseError(error);
    const fix =
      coded.code === ErrorCode.NotAuthorized
        ? `pass this role's NATS credentials: --nats-creds FILE (the NKEY seed whose public key deploy/nats-server.conf lists for the ${options.role}) or --nats-user with GRAMFUSE_NATS_PASSWORD`
        : coded.code === ErrorCode.KeyFileExposed
          ? 'chmod 600 the credentials or key file named above'
          : 'check the URL, that nats-server runs there, and --nats-tls-ca (the CA that signed its certificate)';
    return fail('nats', `${coded.code}: ${coded.message}`, fix);
  }
}

/** disk, memory: free space in the work dir, available memory, against the thresholds given. */
async function resourceChecks(options: DoctorOptions): Promise<DoctorCheck[]> {
  const checks: DoctorCheck[] = [];
  const dir = options.workDir;
  try {
    if (!(await stat(dir)).isDirectory()) throw new Error('not a directory');
    await access(dir, constants.W_OK);
    const fs = await statfs(dir);
    const free = fs.bavail * fs.bsize;
    checks.push(
      free < options.minFreeDiskBytes
        ? warn(
            'disk',
            `${formatBytes(free)} free in ${dir}, under ${formatBytes(options.minFreeDiskBytes)}`,
            'free space there (chunks, statistics and merged models land in it), or point the service at a larger disk',
          )
        : ok('disk', `${formatBytes(free)} free in ${dir}`),
    );
  } catch (error) {
    checks.push(
      fail(
        'disk',
        `${dir}: ${(error as Error).message}`,
        "create the work directory and give this service's user write access (ReadWritePaths= in its unit)",
      ),
    );
  }
  const memory = freemem();
  checks.push(
    memory < options.minFreeMemoryBytes
      ? warn(
          'memory',
          `${formatBytes(memory)} available, under ${formatBytes(options.minFreeMemoryBytes)}`,
          'free memory, or lower --memory-budget (the agent then takes more passes over the data)',
        )
      : ok('memory', `${formatBytes(memory)} available`),
  );
  return checks;
}

/** cuda: whether onnxruntime's CUDA provider loads. CPU-only is a warning for a service that computes, never a failure. */
async function cudaCheck(role: DoctorRole): Promise<DoctorCheck | undefined> {
  if (role === 'observer') return undefined;
  const { resolveDevice } = await import('../shared/onnx/index.js');
  const { solverProbeModel } = await import('../shared/linalg/index.js');
  const choice = await resolveDevice('auto', solverProbeModel());
  if (choice.device === 'cuda') return ok('cuda', 'onnxruntime CUDA provider loaded');
  return warn(
    'cuda',
    `CPU only: ${choice.reason.replace(/^using CPU: /, '')}`,
    role === 'agent'
      ? 'collection runs on CPU (slower); fine for small models'
      : 'solves run on CPU (slower for large groups); fine for small models',
  );
}

/** One line per check: `ok|warn|fail  <check>  <detail>[; fix: <fix>]`. */
export function formatDoctorLine(check: DoctorCheck): string {
  return `${check.status.padEnd(4)}  ${check.name}  ${check.detail}${check.fix === undefined ? '' : `; fix: ${check.fix}`}`;
}
