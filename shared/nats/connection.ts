import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';

import { ErrorCode, GramfuseError } from '../errors.js';

/** The JetStream stream of audit records: subjects `gramfuse.audit.<job>.<writer key id>`. */
export const AUDIT_STREAM = 'GRAMFUSE_AUDIT';
/** The JetStream stream of control-plane events: subjects `gramfuse.jobs.<job>.<type>`. */
export const JOBS_STREAM = 'GRAMFUSE_JOBS';

export interface NatsOptions {
  /** Name shown by the server's monitoring, e.g. `gramfuse coordinator`. */
  readonly name: string;
  /** Milliseconds to wait for the first connection. */
  readonly timeoutMs?: number;
}

/**
 * Connects to a NATS server that keeps reconnecting forever once connected: a restarted server is found
 * again without the caller's help. A server that cannot be reached now is a coded UNAVAILABLE error.
 */
export async function connectNats(url: string, options: NatsOptions): Promise<NatsConnection> {
  try {
    return await connect({
      servers: url,
      name: options.name,
      timeout: options.timeoutMs ?? 2000,
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      reconnectJitter: 100,
    });
  } catch (error) {
    throw new GramfuseError(
      ErrorCode.Unavailable,
      `NATS at ${url} cannot be reached (${(error as Error).message}); start nats-server with -js there, or leave out --nats to use the embedded default`,
      { facts: { url } },
    );
  }
}

/** Creates the two gramfuse streams when they do not exist yet (file storage; the audit stream keeps everything). */
export async function ensureStreams(nc: NatsConnection): Promise<JetStreamManager> {
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
    await jsm.streams.add({
      name: AUDIT_STREAM,
      subjects: ['gramfuse.audit.>'],
      storage: 'file',
      description: 'gramfuse audit records: one canonical JSON record per message, chained and signed per writer',
    });
  }
  if (!existing.has(JOBS_STREAM)) {
    await jsm.streams.add({
      name: JOBS_STREAM,
      subjects: ['gramfuse.jobs.>'],
      storage: 'file',
      max_msgs_per_subject: 10_000,
      description: 'gramfuse control-plane events (job state, joins, upload and solve progress, results)',
    });
  }
  return jsm;
}
