import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { ErrorCode, GramfuseError } from '../../../shared/index.js';
import { FileLedger, verifyLedger } from '../../../shared/audit/index.js';
import { generateSigningKeys } from '../../../shared/security/index.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-ledger-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const keys = generateSigningKeys();

async function ledgerWith(name: string, count: number): Promise<string> {
  const path = join(work, `${name}.jsonl`);
  const ledger = await FileLedger.open(path, keys, 'coordinator');
  for (let i = 0; i < count; i++)
    await ledger.append('statistic.committed', 'job1', {
      owner: 'org0',
      statistic: `gram/g${i}`,
      bytes: 1000 + i,
      sha256: 'ab'.repeat(32),
    });
  return path;
}

async function expectInvalid(path: string, message: RegExp): Promise<void> {
  const error = await verifyLedger(path).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(GramfuseError);
  expect((error as GramfuseError).code).toBe(ErrorCode.AuditInvalid);
  expect((error as GramfuseError).message).toMatch(message);
}

describe('audit ledger', () => {
  it('a written ledger verifies: chain, seq, signatures; reopening continues the chain', async () => {
    const path = await ledgerWith('ok', 5);
    const again = await FileLedger.open(path, keys, 'coordinator');
    await again.append('solve.done', 'job1', { mergedModelSha256: 'cd'.repeat(32) });
    const { records } = await verifyLedger(path);
    expect(records.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(records[0]!.kind).toBe('ledger.opened');
    expect(records.at(-1)!.kind).toBe('solve.done');
  });

  it('flipping any single byte of any record makes verify fail, naming the record', async () => {
    const path = await ledgerWith('flip', 4);
    const original = readFileSync(path);
    const lines = original.toString('utf8').split('\n');
    let offset = 0;
    for (const [index, line] of lines.slice(0, -1).entries()) {
      // Flip a byte in the middle of each record's line (a digit, letter or quote: all covered by chain/signature/parse).
      const position = offset + Math.floor(line.length / 2);
      const bytes = Buffer.from(original);
      bytes[position] = bytes[position]! ^ 0x01;
      writeFileSync(path, bytes);
      await expectInvalid(path, new RegExp(`record at line ${index + 1} `));
      offset += Buffer.byteLength(line) + 1;
    }
  });

  it('a deleted, a swapped and an inserted record are detected', async () => {
    const path = await ledgerWith('edit', 4);
    const lines = readFileSync(path, 'utf8').split('\n').slice(0, -1);
    writeFileSync(path, `${[...lines.slice(0, 2), ...lines.slice(3)].join('\n')}\n`);
    await expectInvalid(path, /record at line 3 has seq 4, expected 3/);
    writeFileSync(path, `${[lines[0], lines[2], lines[1], ...lines.slice(3)].join('\n')}\n`);
    await expectInvalid(path, /record at line 2 has seq 3, expected 2/);
    writeFileSync(path, `${[lines[0], lines[1], lines[1], ...lines.slice(2)].join('\n')}\n`);
    await expectInvalid(path, /record at line 3 has seq 2, expected 3/);
  });

  it('a partial final record (crash mid-write) is reported by verify and removed when the writer reopens', async () => {
    const path = await ledgerWith('partial', 2);
    const text = readFileSync(path, 'utf8');
    writeFileSync(path, `${text}{"actor":"coordinator","facts":{"own`);
    await expectInvalid(path, /record at line 4 is partial \(no final newline: a crash mid-write\)/);
    const notes: string[] = [];
    const reopened = await FileLedger.open(path, keys, 'coordinator', (l) => notes.push(l));
    expect(notes[0]).toMatch(/removing a partial final record/);
    await reopened.append('job.failed', 'job1', { code: 'X', message: 'y' });
    expect((await verifyLedger(path)).records).toHaveLength(4);
  });

  it('with --keys, a ledger signed by another key does not verify', async () => {
    const path = await ledgerWith('keys', 1);
    const other = generateSigningKeys();
    const error = await verifyLedger(path, [other.publicKeyPem]).catch((e: unknown) => e);
    expect((error as GramfuseError).message).toMatch(/record at line 1 \(seq 1\) is signed by an unknown key/);
    expect((await verifyLedger(path, [keys.publicKeyPem])).records).toHaveLength(2);
  });
});

describe('concurrent appends', () => {
  it('many appends at once still form one chain', async () => {
    const path = join(work, 'concurrent.jsonl');
    const ledger = await FileLedger.open(path, keys, 'coordinator');
    await Promise.all(Array.from({ length: 25 }, (_, i) => ledger.append('receipt.issued', 'job1', { statistic: `s${i}` })));
    expect((await verifyLedger(path)).records).toHaveLength(26);
  });
});
