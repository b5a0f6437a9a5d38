import { type ConnectOptions, connectFederation } from '../client/index.js';
import { ErrorCode, GramfuseError } from '../shared/index.js';
import { type JobEvent } from '../shared/events/index.js';
import { NatsEventBus, type NatsTarget } from '../shared/nats/index.js';

export interface WatchOptions {
  readonly nats?: NatsTarget;
  readonly connect?: ConnectOptions;
  readonly timeoutSeconds: number;
  readonly onEvent: (event: JobEvent) => void;
  /** A record on the events subjects that is not a job event: skipped (the watch goes on) and reported here. */
  readonly onSkipped?: (problem: GramfuseError) => void;
}

/** One line per event, for a person. */
export function formatJobEvent(e: JobEvent): string {
  const d = e.data;
  const what =
    e.type === 'state'
      ? `state ${String(d.state)} (${JSON.stringify(d.completed ?? '?')}/${JSON.stringify(d.quorum ?? '?')} owners complete)${
          d.failure === undefined ? '' : `: ${(d.failure as { code: string }).code}: ${(d.failure as { message: string }).message}`
        }`
      : e.type === 'joined'
        ? `${String(d.owner)} joined (${String(d.statistics)} statistics, ${String(d.bytes)} bytes)`
        : e.type === 'upload'
          ? `${String(d.owner)}: ${String(d.committed)}/${String(d.total)} statistics committed (${String(d.bytes)} bytes)`
          : e.type === 'solve'
            ? `${String(d.phase)} ${String(d.done)}/${String(d.total)} (${String(d.item)})`
            : `result ready: merged model sha256 ${String(d.sha256)} (${String(d.bytes)} bytes)`;
  return `${e.time}  ${e.job}  ${what}`;
}

/**
 * `gramfuse job watch`: follows a job until it is done or failed and returns the final state. On NATS it
 * replays the job's stored events first; over gRPC it follows the coordinator's status stream.
 */
export async function watchJob(id: string, options: WatchOptions): Promise<'done' | 'failed'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(
      () => reject(new GramfuseError(ErrorCode.DeadlineExceeded, `job ${id}: not finished after ${options.timeoutSeconds} s of watching`)),
      options.timeoutSeconds * 1000,
    );
  });
  try {
    if (options.nats !== undefined) {
      const bus = await NatsEventBus.connect(options.nats, 'gramfuse job watch');
      try {
        let finish!: (state: 'done' | 'failed') => void;
        const finished = new Promise<'done' | 'failed'>((resolve) => (finish = resolve));
        const stop = await bus.subscribe(
          id,
          (event) => {
            options.onEvent(event);
            if (event.type === 'state' && (event.data.state === 'done' || event.data.state === 'failed')) finish(event.data.state);
          },
          { history: true, ...(options.onSkipped === undefined ? {} : { onSkipped: options.onSkipped }) },
        );
        try {
          return await Promise.race([finished, timeout]);
        } finally {
          await stop();
        }
      } finally {
        await bus.close();
      }
    }
    const client = connectFederation(options.connect!);
    try {
      const final = await Promise.race([
        client.watch(id, (s) =>
          options.onEvent({
            job: id,
            type: 'state',
            time: new Date().toISOString(),
            data: {
              state: s.state,
              completed: s.completed.length,
              quorum: s.quorum,
              ...(s.failureCode === '' ? {} : { failure: { code: s.failureCode, message: s.failureMessage } }),
            },
          }),
        ),
        timeout,
      ]);
      return final.state === 'done' ? 'done' : 'failed';
    } finally {
      client.close();
    }
  } finally {
    clearTimeout(timer);
  }
}
