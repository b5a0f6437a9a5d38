// The distributed solve's work queue (DESIGN.md §6): one JetStream stream with the WorkQueue retention policy, one
// durable pull consumer every solver worker shares. A message is a task descriptor (job, group, sizes, content
// digests of the summed matrices); the matrices themselves travel over gRPC, never over NATS.
import { AckPolicy, type JetStreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';

import { ErrorCode, GramfuseError } from '../errors.js';
import { subjectToken } from '../events/index.js';
import { ensureStreams } from './connection.js';

/** The JetStream stream of solve tasks: subjects `gramfuse.solve.<job>`, WorkQueue retention (a task is gone once acknowledged). */
export const SOLVE_STREAM = 'GRAMFUSE_SOLVE';
/** The durable pull consumer the solver workers share (a WorkQueue stream allows one consumer per subject). */
export const SOLVE_CONSUMER = 'gramfuse-solvers';

export function solveSubject(job: string): string {
  return `gramfuse.solve.${subjectToken(job)}`;
}

/** JetStream's advisory when a task reached MaxDeliver without being acknowledged. */
export const MAX_DELIVERIES_ADVISORY = `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${SOLVE_STREAM}.${SOLVE_CONSUMER}`;
/** JetStream's advisory when a client terminated a task (`term()`): the message leaves the work queue for good. */
export const MSG_TERMINATED_ADVISORY = `$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.${SOLVE_STREAM}.${SOLVE_CONSUMER}`;

/** What the coordinator reads of either advisory (nats-server's JSON; other fields ignored). */
export const SolveAdvisory = z.object({ stream_seq: z.number().int().positive(), deliveries: z.number().int().nonnegative().optional() });
export type SolveAdvisory = z.infer<typeof SolveAdvisory>;

/** An advisory's payload, or undefined when it is not one (a forged or garbled message is skipped, never a crash). */
export function parseSolveAdvisory(data: Uint8Array): SolveAdvisory | undefined {
  try {
    const parsed = SolveAdvisory.safeParse(JSON.parse(new TextDecoder().decode(data)));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

const Digest = z.string().regex(/^[0-9a-f]{64}$/);
const Part = z.object({ sha256: Digest, bytes: z.number().int().positive() }).strict();

/** A solve task: what a worker needs to fetch a group's sums from the coordinator and check them. */
export const SolveTask = z
  .object({
    version: z.literal(1),
    job: z.string().min(1).max(128),
    group: z.string().min(1).max(512),
    /**
     * Random, made when the task is first prepared and kept in its record: a restarted coordinator re-publishes the
     * same message id (de-duplicated), while a later job of the same id and the same sums is a new message.
     */
    nonce: z.string().regex(/^[0-9a-f]{32}$/),
    /** The group's input dimension: Σ G̃ is n × n. */
    n: z.number().int().positive(),
    /** Right-hand sides: Σ G̃B is n × rhs. */
    rhs: z.number().int().positive(),
    /** Σ G̃, its upper triangle packed row by row (row i holds columns i..n-1), float64. */
    gram: Part,
    /** Σ G̃B, n × rhs float64 row-major. */
    rhsPart: Part,
  })
  .strict();
export type SolveTask = z.infer<typeof SolveTask>;

/** The message id of a task: JetStream drops a second publish of it inside the duplicate window (a restarted coordinator). */
export function solveTaskId(task: SolveTask): string {
  return `${task.job}/${task.group}/${task.nonce}`;
}

/** A task message's payload, checked: anything else on the stream is refused with INVALID_DATA. */
export function parseSolveTask(data: Uint8Array): SolveTask {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(data));
  } catch (error) {
    throw new GramfuseError(ErrorCode.InvalidData, `a ${SOLVE_STREAM} message is not JSON (${(error as Error).message})`);
  }
  const parsed = SolveTask.safeParse(value);
  if (!parsed.success)
    throw new GramfuseError(
      ErrorCode.InvalidData,
      `a ${SOLVE_STREAM} message is not a solve task: ${parsed.error.issues[0]?.message ?? ''}`,
    );
  return parsed.data;
}

export interface SolveQueueSettings {
  /** How long a delivered task may go without an ack or an in-progress ack before JetStream redelivers it. */
  readonly ackWaitMs: number;
  /** Deliveries of one task before JetStream gives up on it (the coordinator then fails the job). */
  readonly maxDeliver: number;
}

export const DEFAULT_SOLVE_QUEUE: SolveQueueSettings = { ackWaitMs: 60_000, maxDeliver: 5 };

/**
 * Creates (or updates) the solve stream and the workers' consumer with these settings: the coordinator calls it when
 * it starts with `--solvers nats`, so its AckWait and MaxDeliver are the ones in force.
 */
export async function ensureSolveQueue(nc: NatsConnection, settings: SolveQueueSettings): Promise<JetStreamManager> {
  const jsm = await ensureStreams(nc);
  const names = new Set<string>();
  for await (const name of jsm.streams.names()) names.add(name);
  if (!names.has(SOLVE_STREAM)) {
    await jsm.streams.add({
      name: SOLVE_STREAM,
      subjects: ['gramfuse.solve.>'],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      duplicate_window: 10 * 60 * 1_000_000_000,
      description: 'gramfuse solve tasks: one descriptor per Gram group (digests and sizes; the matrices travel over gRPC)',
    });
  }
  const consumer = {
    durable_name: SOLVE_CONSUMER,
    ack_policy: AckPolicy.Explicit,
    ack_wait: settings.ackWaitMs * 1_000_000,
    max_deliver: settings.maxDeliver,
    max_ack_pending: 1024,
    description: 'gramfuse solver workers (gramfuse solver serve)',
  };
  const existing = await jsm.consumers.info(SOLVE_STREAM, SOLVE_CONSUMER).catch(() => undefined);
  if (existing === undefined) await jsm.consumers.add(SOLVE_STREAM, consumer);
  else if (existing.config.ack_wait !== consumer.ack_wait || existing.config.max_deliver !== consumer.max_deliver)
    await jsm.consumers.update(SOLVE_STREAM, SOLVE_CONSUMER, { ack_wait: consumer.ack_wait, max_deliver: consumer.max_deliver });
  return jsm;
}
