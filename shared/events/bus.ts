import { z } from 'zod';

import { ErrorCode, GramfuseError, schemaProblems, toGramfuseError } from '../errors.js';

/** What a control-plane event reports (DESIGN.md §6). Events carry facts about a job, never tensors. */
export const JobEventType = z.enum(['state', 'joined', 'upload', 'solve', 'result']);
export type JobEventType = z.infer<typeof JobEventType>;

export const JobEvent = z
  .object({
    job: z.string().min(1),
    type: JobEventType,
    time: z.string(),
    data: z.record(z.string(), z.unknown()).describe('state: {state, failure?}; joined: {owner}; upload: {owner, committed, total}; …'),
  })
  .strict();
export type JobEvent = z.infer<typeof JobEvent>;

export interface SubscribeOptions {
  /** Deliver the job's earlier events first (as far as the bus keeps them), then new ones. */
  readonly history?: boolean;
  /**
   * A message on the bus that is not a job event (not JSON, not the schema, or not the job and type its subject
   * names) is skipped, never delivered and never fatal to the subscription: this hears of each one, as an
   * INVALID_DATA error naming the subject and what is wrong. The in-process bus checks events at `publish` and
   * never skips.
   */
  readonly onSkipped?: (problem: GramfuseError) => void;
}

/** Stops a subscription; no event is delivered after it resolves. */
export type Unsubscribe = () => Promise<void>;

/**
 * Control-plane events, one interface with two implementations: InProcessBus (the embedded default) and
 * the NATS bus (subjects `gramfuse.jobs.<job>.<type>`). Both pass the same contract test suite.
 */
export interface EventBus {
  /** Publishes an event; resolves once the bus has it (NATS: stored by JetStream). */
  publish(event: JobEvent): Promise<void>;
  /** Delivers the events of `job` (every job when undefined), in publish order, to `handler`. */
  subscribe(job: string | undefined, handler: (event: JobEvent) => void, options?: SubscribeOptions): Promise<Unsubscribe>;
  close(): Promise<void>;
}

/** A job id as one NATS subject token: ids may contain '.', which separates tokens. */
export function subjectToken(job: string): string {
  return job === '' ? '_' : job.replaceAll('.', '%2E');
}

export function jobFromToken(token: string): string {
  return token === '_' ? '' : token.replaceAll('%2E', '.');
}

export function jobEventSubject(job: string, type: JobEventType): string {
  return `gramfuse.jobs.${subjectToken(job)}.${type}`;
}

/** Checks an event before it is published: a bad event is a programming error, reported with what is wrong. */
export function checkEvent(event: unknown): JobEvent {
  const result = JobEvent.safeParse(event);
  if (result.success) return result.data;
  throw new GramfuseError(ErrorCode.InvalidArgument, `invalid job event: ${schemaProblems(result.error.issues)}`);
}

/**
 * The embedded event bus: delivery in the same process, asynchronously (a handler never runs inside
 * `publish`), in publish order; keeps the last `historyPerJob` events of each job for `history`.
 */
export class InProcessBus implements EventBus {
  private readonly handlers = new Set<{ job: string | undefined; handler: (event: JobEvent) => void }>();
  private readonly history = new Map<string, JobEvent[]>();
  private closed = false;

  constructor(private readonly historyPerJob = 1000) {}

  publish(value: JobEvent): Promise<void> {
    if (this.closed) return Promise.reject(new GramfuseError(ErrorCode.Unavailable, 'the event bus is closed'));
    let event: JobEvent;
    try {
      event = structuredClone(checkEvent(value));
    } catch (error) {
      return Promise.reject(toGramfuseError(error));
    }
    let kept = this.history.get(event.job);
    if (kept === undefined) this.history.set(event.job, (kept = []));
    kept.push(event);
    if (kept.length > this.historyPerJob) kept.shift();
    const targets = [...this.handlers].filter((h) => h.job === undefined || h.job === event.job);
    queueMicrotask(() => {
      for (const target of targets) if (this.handlers.has(target)) target.handler(event);
    });
    return Promise.resolve();
  }

  subscribe(job: string | undefined, handler: (event: JobEvent) => void, options: SubscribeOptions = {}): Promise<Unsubscribe> {
    const entry = { job, handler };
    if (options.history === true) {
      const earlier =
        job === undefined
          ? [...this.history.values()].flat().sort((a, b) => a.time.localeCompare(b.time))
          : [...(this.history.get(job) ?? [])];
      queueMicrotask(() => {
        for (const event of earlier) if (this.handlers.has(entry)) handler(event);
      });
    }
    this.handlers.add(entry);
    return Promise.resolve(() => {
      this.handlers.delete(entry);
      return Promise.resolve();
    });
  }

  close(): Promise<void> {
    this.closed = true;
    this.handlers.clear();
    return Promise.resolve();
  }
}
