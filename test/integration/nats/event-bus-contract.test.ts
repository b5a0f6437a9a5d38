import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type EventBus, InProcessBus, type JobEvent } from '../../../shared/events/index.js';
import { NatsEventBus } from '../../../shared/nats/index.js';
import { NatsServer } from '../../helpers/nats-server.js';

// One contract, two implementations (issue #6): the embedded bus and NATS must behave alike.
let nats: NatsServer;
beforeAll(async () => {
  nats = await NatsServer.start();
});
afterAll(async () => {
  await nats.stop();
});

const implementations: [string, () => Promise<EventBus>][] = [
  ['in-process bus', () => Promise.resolve(new InProcessBus())],
  ['NATS bus', () => NatsEventBus.connect(nats.url, 'contract test')],
];

const event = (job: string, type: JobEvent['type'], n: number): JobEvent => ({
  job,
  type,
  time: new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString(),
  data: { n, nested: { list: [1, 2.5, 'x'] } },
});

/** Collects events until `count` arrived (or fails after 5 s). */
function collector(count: number): { handler: (e: JobEvent) => void; done: Promise<JobEvent[]>; seen: JobEvent[] } {
  const seen: JobEvent[] = [];
  let resolve!: (events: JobEvent[]) => void;
  const done = new Promise<JobEvent[]>((r) => (resolve = r));
  const timer = setTimeout(() => resolve(seen), 5000);
  return {
    seen,
    done,
    handler: (e) => {
      seen.push(e);
      if (seen.length >= count) {
        clearTimeout(timer);
        resolve(seen);
      }
    },
  };
}

const settle = (ms = 300): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe.each(implementations)('event bus contract: %s', (_name, make) => {
  let unique = 0;
  const jobId = (): string => `contract.${Date.now().toString(36)}-${unique++}`;

  it("delivers a job's events in publish order with their data intact, and no other job's", async () => {
    const bus = await make();
    const a = jobId();
    const b = jobId();
    const got = collector(20);
    const stop = await bus.subscribe(a, got.handler);
    for (let i = 0; i < 20; i++) {
      await bus.publish(event(b, 'upload', i));
      await bus.publish(event(a, i % 2 === 0 ? 'upload' : 'state', i));
    }
    const events = await got.done;
    await settle();
    expect(got.seen.length).toBe(20);
    expect(events.map((e) => e.data.n)).toEqual([...Array(20).keys()]);
    expect(events.every((e) => e.job === a)).toBe(true);
    expect(events[3]).toEqual(event(a, 'state', 3));
    await stop();
    await bus.close();
  });

  it('a subscription to every job sees all of them; after unsubscribing, nothing more arrives', async () => {
    const bus = await make();
    const a = jobId();
    const b = jobId();
    const got = collector(2);
    const stop = await bus.subscribe(undefined, (e) => (e.job === a || e.job === b ? got.handler(e) : undefined));
    await bus.publish(event(a, 'joined', 1));
    await bus.publish(event(b, 'joined', 2));
    expect((await got.done).map((e) => e.job).sort()).toEqual([a, b].sort());
    await stop();
    await bus.publish(event(a, 'joined', 3));
    await settle();
    expect(got.seen.length).toBe(2);
    await bus.close();
  });

  it("with history, a late subscriber gets the job's earlier events first, then new ones", async () => {
    const bus = await make();
    const a = jobId();
    for (let i = 0; i < 3; i++) await bus.publish(event(a, 'state', i));
    const got = collector(4);
    const stop = await bus.subscribe(a, got.handler, { history: true });
    await bus.publish(event(a, 'result', 3));
    expect((await got.done).map((e) => [e.type, e.data.n])).toEqual([
      ['state', 0],
      ['state', 1],
      ['state', 2],
      ['result', 3],
    ]);
    await stop();
    await bus.close();
  });

  it('publishing with nobody listening is fine; a malformed event is refused with its path', async () => {
    const bus = await make();
    await expect(bus.publish(event(jobId(), 'solve', 1))).resolves.toBeUndefined();
    await expect(bus.publish({ job: 'x', type: 'nonsense', time: 't', data: {} } as unknown as JobEvent)).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringContaining('type') as unknown as string,
    });
    await bus.close();
  });
});
