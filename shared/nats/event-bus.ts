import { randomUUID } from 'node:crypto';

import { type ConsumerMessages, DeliverPolicy, jetstream, type JetStreamClient } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';

import {
  checkEvent,
  type EventBus,
  JobEvent,
  jobEventSubject,
  type SubscribeOptions,
  subjectToken,
  type Unsubscribe,
} from '../events/index.js';
import { ErrorCode, GramfuseError, schemaProblems, toGramfuseError } from '../errors.js';
import { connectNats, ensureStreams, JOBS_STREAM, natsError, type NatsTarget } from './connection.js';

/**
 * Control-plane events on NATS: published to JetStream (stream GRAMFUSE_JOBS, subjects
 * `gramfuse.jobs.<job>.<type>`), so a watcher that comes late can replay a job's events (`history`).
 */
export class NatsEventBus implements EventBus {
  private readonly js: JetStreamClient;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly owned: boolean,
  ) {
    this.js = jetstream(nc, { timeout: 5000 });
  }

  static async connect(target: NatsTarget, name: string): Promise<NatsEventBus> {
    const nc = await connectNats(target, { name });
    await ensureStreams(nc);
    return new NatsEventBus(nc, true);
  }

  static async over(nc: NatsConnection): Promise<NatsEventBus> {
    await ensureStreams(nc);
    return new NatsEventBus(nc, false);
  }

  /**
   * Publishes an event. While NATS is unreachable, events wait in order in an outbox (at most 10,000) and
   * are sent when it returns, each with a message id so that a retry after a lost ack is not stored twice.
   */
  publish(value: JobEvent): Promise<void> {
    let event: JobEvent;
    try {
      event = checkEvent(value);
    } catch (error) {
      return Promise.reject(toGramfuseError(error));
    }
    return new Promise<void>((resolve) => {
      if (this.outbox.length >= 10_000) this.outbox.shift()?.resolve(); // the oldest progress event gives way
      this.outbox.push({ event, id: `${randomUUID()}`, resolve });
      this.kick();
    });
  }

  private readonly outbox: { event: JobEvent; id: string; resolve: () => void }[] = [];
  private draining: Promise<void> | undefined;
  private closed = false;

  private kick(): void {
    if (this.draining !== undefined || this.closed) return;
    this.draining = (async () => {
      while (this.outbox.length > 0 && !this.closed) {
        const head = this.outbox[0]!;
        try {
          await this.js.publish(jobEventSubject(head.event.job, head.event.type), JSON.stringify(head.event), { msgID: head.id });
          this.outbox.shift();
          head.resolve();
        } catch {
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    })().finally(() => {
      this.draining = undefined;
      if (this.outbox.length > 0 && !this.closed) this.kick();
    });
  }

  /** Events still waiting for NATS. */
  get backlog(): number {
    return this.outbox.length;
  }

  async subscribe(job: string | undefined, handler: (event: JobEvent) => void, options: SubscribeOptions = {}): Promise<Unsubscribe> {
    try {
      return await this.subscribeOnce(job, handler, options);
    } catch (error) {
      throw natsError(this.nc.getServer(), error, `following ${job === undefined ? 'every job' : `job ${job}`}'s events`);
    }
  }

  private async subscribeOnce(
    job: string | undefined,
    handler: (event: JobEvent) => void,
    options: SubscribeOptions,
  ): Promise<Unsubscribe> {
    const filter = `gramfuse.jobs.${job === undefined ? '*' : subjectToken(job)}.>`;
    const deliver = (subject: string, data: Uint8Array, seq?: number): void => {
      const event = eventOf(subject, data, seq);
      if (event instanceof GramfuseError) options.onSkipped?.(event);
      else handler(event);
    };
    if (options.history !== true) {
      const sub: Subscription = this.nc.subscribe(filter, {
        callback: (error, msg) => {
          if (error === null) deliver(msg.subject, msg.data);
        },
      });
      await this.nc.flush();
      return async () => {
        sub.unsubscribe();
        await this.nc.flush();
      };
    }
    const consumer = await this.js.consumers.get(JOBS_STREAM, { filter_subjects: filter, deliver_policy: DeliverPolicy.All });
    const messages: ConsumerMessages = await consumer.consume();
    let stopped = false;
    const done = (async () => {
      for await (const msg of messages) if (!stopped) deliver(msg.subject, msg.data, msg.seq);
    })();
    return async () => {
      stopped = true;
      await messages.close();
      await done.catch(() => undefined);
    };
  }

  /** Waits up to `timeoutMs` for the outbox to empty, then closes (events still waiting are dropped). */
  async close(timeoutMs = 5000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.outbox.length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    this.closed = true;
    for (const entry of this.outbox.splice(0)) entry.resolve();
    if (this.owned) await this.nc.drain().catch(() => undefined);
  }
}

/**
 * A message of the events subjects as a job event, or the INVALID_DATA error saying why it is not one: not UTF-8
 * JSON, not the schema, or about another job or type than its subject names (a publisher may not file an event
 * under someone else's job).
 */
export function eventOf(subject: string, data: Uint8Array, seq?: number): JobEvent | GramfuseError {
  const where = `the message on ${subject}${seq === undefined ? '' : ` (${JOBS_STREAM} seq ${seq})`}`;
  const skipped = (why: string): GramfuseError =>
    new GramfuseError(ErrorCode.InvalidData, `${where} is not a gramfuse job event (${why}); skipped`, {
      facts: { subject, ...(seq === undefined ? {} : { seq }) },
    });
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data));
  } catch (error) {
    return skipped(`not UTF-8 JSON: ${(error as Error).message}`);
  }
  const parsed = JobEvent.safeParse(value);
  if (!parsed.success) return skipped(schemaProblems(parsed.error.issues));
  const event = parsed.data;
  if (subject !== jobEventSubject(event.job, event.type))
    return skipped(
      `it says job ${JSON.stringify(event.job)}, type ${event.type}, which belong on ${jobEventSubject(event.job, event.type)}`,
    );
  return event;
}
