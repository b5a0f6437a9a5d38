import { DeliverPolicy, jetstream } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';

import { ErrorCode, GramfuseError } from '../errors.js';
import { jobFromToken } from '../events/index.js';
import { connectNats, ensureStreams, AUDIT_STREAM, natsError, type NatsTarget } from './connection.js';

/** One writer's records as read back from the audit stream, in stream order. */
export interface StreamLedger {
  readonly writer: string;
  readonly jobs: readonly string[];
  /** The canonical record lines: the same bytes as in the writer's file. */
  readonly text: string;
  readonly records: number;
}

/**
 * Reads every record of GRAMFUSE_AUDIT (optionally only those about one job), grouped by writer key id. A message
 * that cannot be placed in a writer's chain (not JSON, no record sequence number, a subject that is not
 * `gramfuse.audit.<job>.<writer>`) is skipped and reported to `onSkipped` as INVALID_DATA; anything that is placed
 * is then checked by the ledger verification like a file's line.
 */
export async function readAuditStream(
  target: NatsTarget,
  job?: string,
  onSkipped: (problem: GramfuseError) => void = () => undefined,
): Promise<StreamLedger[]> {
  const nc = await connectNats(target, { name: 'gramfuse audit reader' });
  try {
    return await readStream(nc, job, onSkipped);
  } catch (error) {
    throw natsError(target, error, `reading stream ${AUDIT_STREAM}`);
  } finally {
    await nc.drain().catch(() => undefined);
  }
}

async function readStream(
  nc: NatsConnection,
  job: string | undefined,
  onSkipped: (problem: GramfuseError) => void,
): Promise<StreamLedger[]> {
  const jsm = await ensureStreams(nc);
  const info = await jsm.streams.info(AUDIT_STREAM);
  const total = info.state.messages;
  const byWriter = new Map<string, { lines: string[]; seqs: number[]; jobs: Set<string> }>();
  if (total > 0) {
    const js = jetstream(nc);
    const consumer = await js.consumers.get(AUDIT_STREAM, { deliver_policy: DeliverPolicy.All });
    let seen = 0;
    while (seen < total) {
      const batch = await consumer.fetch({ max_messages: Math.min(1000, total - seen), expires: 5000 });
      let got = 0;
      for await (const msg of batch) {
        got++;
        seen++;
        const tokens = msg.subject.split('.');
        const line = recordLine(msg.data);
        if (tokens.length < 4 || typeof line === 'string') {
          onSkipped(
            new GramfuseError(
              ErrorCode.InvalidData,
              `${AUDIT_STREAM} seq ${msg.seq} on ${msg.subject} is not an audit record (${typeof line === 'string' ? line : 'the subject is not gramfuse.audit.<job>.<writer>'}); skipped`,
              { facts: { subject: msg.subject, seq: msg.seq } },
            ),
          );
          continue;
        }
        const writer = tokens.at(-1)!;
        const recordJob = jobFromToken(tokens.slice(2, -1).join('.'));
        let entry = byWriter.get(writer);
        if (entry === undefined) byWriter.set(writer, (entry = { lines: [], seqs: [], jobs: new Set() }));
        entry.lines.push(line.text);
        entry.seqs.push(line.seq);
        if (recordJob !== '') entry.jobs.add(recordJob);
      }
      if (got === 0) break;
    }
  }
  const out: StreamLedger[] = [];
  for (const [writer, entry] of byWriter) {
    if (job !== undefined && !entry.jobs.has(job)) continue;
    // Stream order is publish order, which is each writer's record order; sort defensively by seq.
    const lines = entry.lines
      .map((line, i) => ({ line, seq: entry.seqs[i]! }))
      .sort((a, b) => a.seq - b.seq)
      .map((x) => x.line);
    out.push({ writer, jobs: [...entry.jobs].sort(), text: lines.map((l) => `${l}\n`).join(''), records: lines.length });
  }
  return out.sort((a, b) => a.writer.localeCompare(b.writer));
}

/** A message's text and record sequence number, or why it has none (a message that cannot be a ledger line). */
function recordLine(data: Uint8Array): { text: string; seq: number } | string {
  let text: string;
  let value: unknown;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(data);
    value = JSON.parse(text);
  } catch (error) {
    return `not UTF-8 JSON: ${(error as Error).message}`;
  }
  const seq = (value as { seq?: unknown } | null)?.seq;
  if (typeof value !== 'object' || value === null || typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1)
    return 'no record sequence number';
  if (text.includes('\n')) return 'more than one line';
  return { text, seq };
}
