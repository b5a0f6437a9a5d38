import { readFile } from 'node:fs/promises';

import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import {
  type Authenticator,
  AuthorizationError,
  connect,
  credsAuthenticator,
  type NatsConnection,
  nkeyAuthenticator,
  PermissionViolationError,
  type TlsOptions,
  usernamePasswordAuthenticator,
} from '@nats-io/transport-node';

import { ErrorCode, fileError, GramfuseError } from '../errors.js';
import { readPrivateFile } from '../security/index.js';

/** The JetStream stream of audit records: subjects `gramfuse.audit.<job>.<writer key id>`. */
export const AUDIT_STREAM = 'GRAMFUSE_AUDIT';
/** The JetStream stream of control-plane events: subjects `gramfuse.jobs.<job>.<type>`. */
export const JOBS_STREAM = 'GRAMFUSE_JOBS';

/**
 * Where NATS is and how to prove who we are to it (docs/SECURITY.md, "NATS"). In production every connection speaks
 * TLS with the federation CA and carries credentials of its role (coordinator, solver, agent mirror, observer); a
 * bare URL is for a local nats-server on loopback.
 */
export interface NatsEndpoint {
  /** `nats://host:port` (several servers: comma-separated). */
  readonly url: string;
  /**
   * A NATS credentials file (`.creds`: user JWT and NKEY seed, as `nsc` writes) or an NKEY user seed file (one line
   * `SU…`, as `nk -gen user` writes). Must be private (mode 0600): KEY_FILE_EXPOSED otherwise.
   */
  readonly creds?: string;
  /** A user name of the server's configuration; its password comes with it (`password`). */
  readonly user?: string;
  /** The password of `user` (the CLI reads it from GRAMFUSE_NATS_PASSWORD, never from a flag). */
  readonly password?: string;
  /** The federation CA certificate (PEM): the server's certificate must chain to it. Any `tls*` field requires TLS. */
  readonly tlsCa?: string;
  /** A client certificate (PEM) for a server that verifies clients (`verify: true`); needs `tlsKey`. */
  readonly tlsCert?: string;
  /** The client certificate's private key (PEM), mode 0600. */
  readonly tlsKey?: string;
}

/** A NATS server: a bare URL (no TLS, no credentials) or an endpoint with them. */
export type NatsTarget = string | NatsEndpoint;

/** The URL of a target, for messages (never its credentials). */
export function natsUrl(target: NatsTarget): string {
  return typeof target === 'string' ? target : target.url;
}

export interface NatsOptions {
  /** Name shown by the server's monitoring, e.g. `gramfuse coordinator`. */
  readonly name: string;
  /** Milliseconds to wait for the first connection. */
  readonly timeoutMs?: number;
}

/** An NKEY user seed: `SU` and 56 base32 characters. */
const USER_SEED = /^SU[A-Z2-7]{56}$/;

async function readPublic(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw fileError(error, path, `reading the ${what}`);
  }
}

/** The TLS options and authenticator of an endpoint, its files read and checked (private ones 0600). */
async function security(target: NatsTarget): Promise<{ tls?: TlsOptions; authenticator?: Authenticator }> {
  if (typeof target === 'string') return {};
  if ((target.tlsCert === undefined) !== (target.tlsKey === undefined))
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      'NATS client certificate: give --nats-tls-cert and --nats-tls-key together (or neither: the client certificate is optional)',
    );
  if (target.creds !== undefined && target.user !== undefined)
    throw new GramfuseError(ErrorCode.InvalidArgument, 'NATS credentials: give --nats-creds or --nats-user (one of them), not both');
  if (target.user !== undefined && (target.password ?? '') === '')
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `NATS user ${target.user} has no password: set GRAMFUSE_NATS_PASSWORD in the environment (never on the command line)`,
    );
  let tls: TlsOptions | undefined;
  if (target.tlsCa !== undefined || target.tlsCert !== undefined) {
    tls = {
      ...(target.tlsCa === undefined ? {} : { ca: await readPublic(target.tlsCa, 'NATS CA certificate') }),
      ...(target.tlsCert === undefined ? {} : { cert: await readPublic(target.tlsCert, 'NATS client certificate') }),
      ...(target.tlsKey === undefined ? {} : { key: await readPrivateFile(target.tlsKey, 'NATS client private key') }),
    };
  }
  let authenticator: Authenticator | undefined;
  if (target.creds !== undefined) {
    const text = await readPrivateFile(target.creds, 'NATS credentials file');
    if (text.includes('-----BEGIN NATS USER JWT-----')) authenticator = credsAuthenticator(new TextEncoder().encode(text));
    else {
      const seed = text
        .split('\n')
        .map((line) => line.trim())
        .find((line) => USER_SEED.test(line));
      if (seed !== undefined) authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
    }
    if (authenticator === undefined)
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        `${target.creds}: neither a NATS .creds file (BEGIN NATS USER JWT) nor an NKEY user seed (a line SU…); make one with \`nk -gen user\` or \`nsc\``,
        { facts: { path: target.creds } },
      );
  } else if (target.user !== undefined) authenticator = usernamePasswordAuthenticator(target.user, target.password);
  return { ...(tls === undefined ? {} : { tls }), ...(authenticator === undefined ? {} : { authenticator }) };
}

/**
 * A NATS failure as a coded error naming the server and the fix: NOT_AUTHORIZED for refused credentials or a subject
 * this user's role may not use, UNAVAILABLE otherwise. `doing` (what failed, once connected) replaces "cannot be
 * reached". A GramfuseError passes through unchanged.
 */
export function natsError(target: NatsTarget, error: unknown, doing?: string): GramfuseError {
  if (error instanceof GramfuseError) return error;
  const url = natsUrl(target);
  const message = (error as Error | undefined)?.message ?? String(error);
  const cause = (error as Error | undefined)?.cause;
  if (error instanceof AuthorizationError || cause instanceof AuthorizationError || /authorization violation/i.test(message))
    return new GramfuseError(
      ErrorCode.NotAuthorized,
      `NATS at ${url} refused this client's credentials (${message}); pass the role's --nats-creds (or --nats-user with GRAMFUSE_NATS_PASSWORD) that the server's configuration lists`,
      { facts: { url }, cause: error },
    );
  if (error instanceof PermissionViolationError || cause instanceof PermissionViolationError || /permissions violation/i.test(message))
    return new GramfuseError(
      ErrorCode.NotAuthorized,
      `NATS at ${url} does not permit this (${message}); this NATS user's role may not do it (docs/SECURITY.md lists each role's subjects)`,
      { facts: { url }, cause: error },
    );
  if (doing !== undefined)
    return new GramfuseError(ErrorCode.Unavailable, `NATS at ${url}: ${doing} failed (${message}); retry when NATS is healthy`, {
      facts: { url },
      cause: error,
    });
  return new GramfuseError(
    ErrorCode.Unavailable,
    `NATS at ${url} cannot be reached (${message}); start nats-server with -js there (with TLS: pass the CA that signed its certificate as --nats-tls-ca), or leave out --nats to use the embedded default`,
    { facts: { url }, cause: error },
  );
}

/**
 * Connects to a NATS server that keeps reconnecting forever once connected: a restarted server is found
 * again without the caller's help. A server that cannot be reached now is a coded UNAVAILABLE error; one that
 * refuses the credentials NOT_AUTHORIZED; a private file readable by others KEY_FILE_EXPOSED.
 */
export async function connectNats(target: NatsTarget, options: NatsOptions): Promise<NatsConnection> {
  const secured = await security(target);
  try {
    return await connect({
      servers: natsUrl(target).split(','),
      name: options.name,
      timeout: options.timeoutMs ?? 2000,
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      reconnectJitter: 100,
      ...secured,
    });
  } catch (error) {
    throw natsError(target, error);
  }
}

/** Creates the two gramfuse streams when they do not exist yet (file storage; the audit stream keeps everything). */
export async function ensureStreams(nc: NatsConnection): Promise<JetStreamManager> {
  try {
    return await ensureStreamsOnce(nc);
  } catch (error) {
    throw natsError(nc.getServer(), error, 'looking up the gramfuse streams');
  }
}

async function ensureStreamsOnce(nc: NatsConnection): Promise<JetStreamManager> {
  let jsm: JetStreamManager;
  try {
    jsm = await jetstreamManager(nc, { timeout: 5000 });
  } catch (error) {
    throw new GramfuseError(
      ErrorCode.Unavailable,
      `NATS at ${nc.getServer()} has no JetStream (${(error as Error).message}); start nats-server with -js`,
    );
  }
  const existing = new Set<string>();
  for await (const name of jsm.streams.names()) existing.add(name);
  if (!existing.has(AUDIT_STREAM)) {
    await addStream(jsm, nc, {
      name: AUDIT_STREAM,
      subjects: ['gramfuse.audit.>'],
      storage: 'file',
      description: 'gramfuse audit records: one canonical JSON record per message, chained and signed per writer',
    });
  }
  if (!existing.has(JOBS_STREAM)) {
    await addStream(jsm, nc, {
      name: JOBS_STREAM,
      subjects: ['gramfuse.jobs.>'],
      storage: 'file',
      max_msgs_per_subject: 10_000,
      description: 'gramfuse control-plane events (job state, joins, upload and solve progress, results)',
    });
  }
  return jsm;
}

/**
 * Creates a stream. In production only the coordinator's NATS user may (docs/SECURITY.md): anyone else finding a
 * stream missing is told to start the coordinator first, instead of a bare permissions violation.
 */
export async function addStream(
  jsm: JetStreamManager,
  nc: NatsConnection,
  config: Parameters<JetStreamManager['streams']['add']>[0],
): Promise<void> {
  try {
    await jsm.streams.add(config);
  } catch (error) {
    const coded = natsError(nc.getServer(), error);
    if (coded.code !== ErrorCode.NotAuthorized) throw error;
    throw new GramfuseError(
      ErrorCode.NotAuthorized,
      `JetStream stream ${config.name ?? ''} does not exist on NATS at ${nc.getServer()} and this NATS user may not create it: start the coordinator (its user creates the streams) first`,
      { facts: { stream: config.name ?? '' }, cause: error },
    );
  }
}
