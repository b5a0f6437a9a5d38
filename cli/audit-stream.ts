// The audit commands that read or write the GRAMFUSE_AUDIT stream on NATS (`audit verify --nats`, `audit publish`),
// apart from the file-only ones in audit-commands.ts so that verifying a ledger file never loads a NATS client.
import { readFile } from 'node:fs/promises';

import { ErrorCode, GramfuseError, toGramfuseError } from '../shared/index.js';
import { verifyLedger, verifyLedgerText } from '../shared/audit/index.js';
import { AuditPublisher, type NatsTarget, natsUrl, readAuditStream } from '../shared/nats/index.js';
import { trustedKeys } from './audit-commands.js';

/** `gramfuse audit verify --nats URL`: every writer's records in GRAMFUSE_AUDIT, checked exactly as a file is. */
export async function auditVerifyStream(target: NatsTarget, keys?: readonly string[]): Promise<string> {
  const url = natsUrl(target);
  const skipped: string[] = [];
  const ledgers = await readAuditStream(target, undefined, (problem) => skipped.push(`skipped: ${problem.toLine()}`));
  if (ledgers.length === 0) return [`${url} GRAMFUSE_AUDIT: no records`, ...skipped].join('\n');
  const trusted = await trustedKeys(keys);
  const lines: string[] = [];
  for (const ledger of ledgers) {
    const { records } = verifyLedgerText(ledger.text, `${url} GRAMFUSE_AUDIT writer ${ledger.writer}`, trusted);
    const actors = [...new Set(records.map((r) => r.actor))].join(', ');
    lines.push(
      `${url} GRAMFUSE_AUDIT writer ${ledger.writer} (${actors}): ${records.length} records, jobs ${ledger.jobs.join(', ') || '-'}; chain and signatures verify`,
    );
  }
  return [...lines, ...skipped].join('\n');
}

/** `gramfuse audit publish`: the ledger's backlog to GRAMFUSE_AUDIT; nothing already there is sent twice. */
export async function auditPublish(ledger: string, target: NatsTarget, timeoutSeconds: number): Promise<string> {
  const url = natsUrl(target);
  const { records } = await verifyLedger(ledger); // publish only what verifies
  let why = '';
  const publisher = await AuditPublisher.start({ path: ledger }, target, 'gramfuse audit publish', (line) => (why = line));
  try {
    const left = await publisher.flush(timeoutSeconds * 1000);
    if (left > 0)
      throw new GramfuseError(
        ErrorCode.Unavailable,
        `${ledger}: ${left} record(s) could not be published to ${url} in ${timeoutSeconds} s${why === '' ? '' : ` (${why})`}; run again later`,
      );
  } finally {
    await publisher.close();
  }
  // The local progress marker is not proof: ask the stream which of this ledger's records it holds.
  let onStream: Awaited<ReturnType<typeof readAuditStream>>;
  try {
    onStream = await readAuditStream(target);
  } catch (error) {
    throw new GramfuseError(
      ErrorCode.Unavailable,
      `${ledger}: cannot read stream GRAMFUSE_AUDIT on ${url} to confirm the records are there (${toGramfuseError(error).message}); run again when NATS is reachable`,
      { facts: { url } },
    );
  }
  const held = new Set(onStream.flatMap((l) => l.text.split('\n').filter((x) => x !== '')));
  const text = await readFile(ledger, 'utf8');
  const missing = text
    .split('\n')
    .filter((l) => l !== '')
    .map((line, i) => ({ line, seq: i + 1 }))
    .filter(({ line }) => !held.has(line));
  if (missing.length > 0) {
    const seqs = missing
      .slice(0, 10)
      .map((m) => m.seq)
      .join(', ');
    throw new GramfuseError(
      ErrorCode.Unavailable,
      `${ledger}: ${missing.length} of ${records.length} records are not in stream GRAMFUSE_AUDIT on ${url} (seq ${seqs}${missing.length > 10 ? ', …' : ''}); run audit publish again`,
      { facts: { url, missing: missing.length } },
    );
  }
  return `${ledger}: all ${records.length} records are in stream GRAMFUSE_AUDIT on ${url} (checked against the stream, record by record)`;
}
