import { readFile } from 'node:fs/promises';

import { jetstream, type JetStreamClient, JetStreamApiCodes, JetStreamApiError, type JetStreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';

import { writeFileAtomic } from '../atomic-file.js';
import { AuditRecord, type FileLedger, readLedgerRecords } from '../audit/index.js';
import { subjectToken } from '../events/index.js';
import { AUDIT_STREAM, connectNats, ensureStreams, type NatsTarget } from './connection.js';

/** A record's subject: per job, and per writer (its key id) so that each writer's chain can be checked on its own subjects. */
export function auditSubject(job: string, writerKeyId: string): string {
  return `gramfuse.audit.${subjectToken(job)}.${writerKeyId}`;
}

interface Pending {
  readonly seq: number;
  readonly job: string;
  /** The writer's key id (from the record itself: a ledger reopened with another key keeps its old records' subjects). */
  readonly key: string;
  readonly line: string;
}

/** What the publisher needs of a ledger: its file, and (for a live ledger) news of each append. */
export type LedgerSource = Pick<FileLedger, 'path'> & Partial<Pick<FileLedger, 'onAppend'>>;

/**
 * Mirrors a file ledger into JetStream (DESIGN.md §6): the file is written first; each record is then
 * published in order with a message id (`<key id>-<seq>`, de-duplicated by the server) and an
 * expected-last-subject-sequence check. When NATS is down, records wait (the file holds them) and are
 * published when it returns; `<ledger>.nats.json` remembers how far publishing got, and a publish that
 * may have landed before a crash is found on its subject and not repeated. Never lost, never duplicated.
 */
export class AuditPublisher {
  private readonly pending: Pending[] = [];
  private nc: NatsConnection | undefined;
  private js: JetStreamClient | undefined;
  private jsm: JetStreamManager | undefined;
  private readonly lastBySubject = new Map<string, number>();
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private detach: (() => void) | undefined;
  private published = 0;
  private lastError = '';

  private constructor(
    private readonly ledger: LedgerSource,
    private readonly target: NatsTarget,
    private readonly name: string,
    private readonly log: (line: string) => void,
  ) {}

  /** Starts mirroring `ledger`: records not yet published (from earlier runs too) go first. Never throws for NATS being down. */
  static async start(
    ledger: LedgerSource,
    target: NatsTarget,
    name: string,
    log: (line: string) => void = () => undefined,
  ): Promise<AuditPublisher> {
    const publisher = new AuditPublisher(ledger, target, name, log);
    publisher.published = (await publisher.readMarker()) ?? 0;
    for (const { record, line } of await readLedgerRecords(ledger.path))
      if (record.seq > publisher.published) publisher.pending.push({ seq: record.seq, job: record.job, key: record.key, line });
    publisher.detach = ledger.onAppend?.((record, line) => {
      publisher.pending.push({ seq: record.seq, job: record.job, key: record.key, line });
      publisher.kick();
    });
    publisher.kick();
    return publisher;
  }

  private get markerPath(): string {
    return `${this.ledger.path}.nats.json`;
  }

  private async readMarker(): Promise<number | undefined> {
    try {
      const value = JSON.parse(await readFile(this.markerPath, 'utf8')) as { published?: unknown };
      return typeof value.published === 'number' ? value.published : undefined;
    } catch {
      return undefined; // no marker: start from the first record; subjects tell what already landed
    }
  }

  /** Records still waiting for JetStream. */
  get backlog(): number {
    return this.pending.length;
  }

  private kick(): void {
    if (this.closed || this.running !== undefined) return;
    this.running = this.drain().finally(() => {
      this.running = undefined;
      if (this.pending.length > 0 && !this.closed && this.timer === undefined) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.kick();
        }, 500);
        this.timer.unref();
      }
    });
  }

  private async drain(): Promise<void> {
    try {
      if (this.nc === undefined || this.nc.isClosed()) {
        this.nc = await connectNats(this.target, { name: this.name, timeoutMs: 1000 });
        this.jsm = await ensureStreams(this.nc);
        this.js = jetstream(this.nc, { timeout: 3000 });
        this.lastBySubject.clear();
      }
      while (this.pending.length > 0 && !this.closed) {
        const item = this.pending[0]!;
        await this.publishOne(item);
        this.pending.shift();
        this.published = item.seq;
        await writeFileAtomic(this.markerPath, JSON.stringify({ published: item.seq }), 'recording audit publishing progress');
      }
      if (this.lastError !== '') this.log(`audit: NATS is back; the ledger is published up to record ${this.published}`);
      this.lastError = '';
    } catch (error) {
      const message = (error as Error).message;
      if (message !== this.lastError)
        this.log(`audit: ${this.pending.length} record(s) wait for NATS (${message}); they stay in ${this.ledger.path} and are retried`);
      this.lastError = message;
    }
  }

  private async publishOne(item: Pending): Promise<void> {
    const subject = auditSubject(item.job, item.key);
    for (let attempt = 0; ; attempt++) {
      let last = this.lastBySubject.get(subject);
      if (last === undefined) {
        const stored = await this.jsm!.streams.getMessage(AUDIT_STREAM, { last_by_subj: subject }).catch((error: unknown) => {
          if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.NoMessageFound) return null;
          throw error;
        });
        if (stored !== null) {
          const record = storedRecord(stored.data);
          this.lastBySubject.set(subject, stored.seq);
          if (record === undefined)
            // Not a record (someone else's garbage on this writer's subject): it proves nothing landed; publish after it.
            this.log(
              `audit: ${AUDIT_STREAM} seq ${stored.seq} on ${subject} is not an audit record (INVALID_DATA); skipped, publishing after it`,
            );
          else if (record.seq >= item.seq) return; // it landed before (a crash between the ack and the marker)
          last = stored.seq;
        } else last = 0;
      }
      try {
        const ack = await this.js!.publish(subject, item.line, {
          msgID: `${item.key}-${item.seq}`,
          expect: { lastSubjectSequence: last },
        });
        this.lastBySubject.set(subject, ack.seq);
        return;
      } catch (error) {
        // Someone (this writer before a restart) published on the subject since we looked: look again.
        if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamWrongLastSequence && attempt < 3) {
          this.lastBySubject.delete(subject);
          continue;
        }
        throw error;
      }
    }
  }

  /** Publishes what is pending, waiting at most `timeoutMs`; resolves with the records still waiting. */
  async flush(timeoutMs = 10_000): Promise<number> {
    const until = Date.now() + timeoutMs;
    while (this.pending.length > 0 && Date.now() < until) {
      this.kick();
      await Promise.race([this.running, new Promise((resolve) => setTimeout(resolve, 200))]);
    }
    return this.pending.length;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.detach?.();
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.running;
    await this.nc?.drain().catch(() => undefined);
  }
}

/** A stored message as an audit record, or undefined when it is not one (not JSON, not the record schema). */
function storedRecord(data: Uint8Array): AuditRecord | undefined {
  try {
    const parsed = AuditRecord.safeParse(JSON.parse(new TextDecoder().decode(data)));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
