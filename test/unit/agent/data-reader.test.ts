import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { collectExamples, loadTokenizer, readExamples } from '../../../agent/index.js';
import { ErrorCode, GramfuseError } from '../../../shared/index.js';
import { EXAMPLE_TOKENIZER as TOKENIZER } from '../../helpers/examples.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-reader-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const file = (name: string, content: string): string => {
  const path = join(work, name);
  writeFileSync(path, content);
  return path;
};

describe('data readers', () => {
  it('CSV with a header row, quoted fields, a pair field and renamed fields', async () => {
    const path = file('pairs.csv', 'premise,hypothesis,gold\n"A cat, sitting",A cat sits,yes\nDogs bark,"He said ""no""",no\n');
    const rows = [];
    for await (const e of readExamples(path, { textField: 'premise', textPairField: 'hypothesis', labelField: 'gold' })) rows.push(e);
    expect(rows).toEqual([
      { text: 'A cat, sitting', pair: 'A cat sits', label: 'yes', line: 1 },
      { text: 'Dogs bark', pair: 'He said "no"', label: 'no', line: 2 },
    ]);
  });

  it('a malformed CSV names the file and line', async () => {
    const path = file('broken.csv', 'text,label\nfine,a\n"open quote,b\n');
    const error = await collectExamples(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GramfuseError);
    expect((error as GramfuseError).code).toBe(ErrorCode.InvalidData);
    expect((error as GramfuseError).message).toMatch(/broken\.csv:\d+: malformed CSV/);
  });

  it('--max-examples picks a seeded subset: the same seed the same rows, in file order', async () => {
    const path = file('many.jsonl', Array.from({ length: 200 }, (_, i) => JSON.stringify({ text: `row ${i}`, label: 'x' })).join('\n'));
    const a = await collectExamples(path, { maxExamples: 20, seed: 7 });
    const b = await collectExamples(path, { maxExamples: 20, seed: 7 });
    const c = await collectExamples(path, { maxExamples: 20, seed: 8 });
    expect(a.map((e) => e.line)).toEqual(b.map((e) => e.line));
    expect(a.map((e) => e.line)).not.toEqual(c.map((e) => e.line));
    expect(a.map((e) => e.line)).toEqual([...a.map((e) => e.line)].sort((x, y) => x - y));
    expect(new Set(a.map((e) => e.line)).size).toBe(20);
  });

  it('a label is optional unless required', async () => {
    const path = file('unlabelled.jsonl', '{"text": "no label here"}\n');
    expect(await collectExamples(path)).toEqual([{ text: 'no label here', line: 1 }]);
    const error = await collectExamples(path, { requireLabel: true }).catch((e: unknown) => e);
    expect((error as GramfuseError).message).toMatch(/unlabelled\.jsonl:1: field "label" is missing/);
  });
});

describe('tokenizer', () => {
  it('truncates to max length keeping [CLS] … [SEP], and pairs get type ids', async () => {
    const tokenizer = await loadTokenizer(TOKENIZER, { maxLength: 16 });
    const long = tokenizer.encode('word '.repeat(100));
    expect(long.ids).toHaveLength(16);
    const short = tokenizer.encode('word');
    expect(long.ids[0]).toBe(short.ids[0]);
    expect(long.ids.at(-1)).toBe(short.ids.at(-1));
    const pair = tokenizer.encode('first sentence here', 'second one');
    expect(pair.typeIds).toContain(1);
    expect(pair.typeIds[0]).toBe(0);
    const longPair = tokenizer.encode('a '.repeat(40), 'b '.repeat(40));
    expect(longPair.ids).toHaveLength(16);
  });
});
