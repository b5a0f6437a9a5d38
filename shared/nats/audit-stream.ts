import { DeliverPolicy, jetstream } from '@nats-io/jetstream';

import { jobFromToken } from '../events/index.js';
import { connectNats, ensureStreams, AUDIT_STREAM } from './connection.js';

/** One writer's records as read back from the audit stream, in stream order. */
export interface StreamLedger {
  readonly writer: string;
  readonly jobs: readonly string[];
  /** The canonical record lines: the same bytes as in the writer's file. */
  readonly text: string;
  readonly records: number;
}

/** Reads every record of GRAMFUSE_AUDIT (optionally only those about one job), grouped by writer key id. */
export async function readAuditStream(url: string, job?: string): Promise<StreamLedger[]> {
  const nc = await connectNats(url, { name: 'gramfuse audit reader' });
  try {
    const jsm = await ensureStreams(nc);
    const info = await jsm.streams.info(AUDIT_STREAM);
    const total = info.state.messages;
    const byWriter = new Map<string, { lines: string[]; jobs: Set<string> }>();
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
          const writer = tokens.at(-1)!;
          const recordJob = jobFromToken(tokens.slice(2, -1).join('.'));
          let entry = byWriter.get(writer);
          if (entry === undefined) byWriter.set(writer, (entry = { lines: [], jobs: new Set() }));
          entry.lines.push(msg.string());
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
        .map((line) => ({ line, seq: (JSON.parse(line) as { seq?: number }).seq ?? 0 }))
        .sort((a, b) => a.seq - b.seq)
        .map((x) => x.line);
      out.push({ writer, jobs: [...entry.jobs].sort(), text: lines.map((l) => `${l}\n`).join(''), records: lines.length });
    }
    return out.sort((a, b) => a.writer.localeCompare(b.writer));
  } finally {
    await nc.drain();
  }
}
