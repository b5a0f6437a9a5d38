// The data formats owners hold beyond JSONL/CSV: Parquet (read with hyparquet, written here with hyparquet-writer), and
// chat data rendered with the checkpoint's chat template (tokenizer_config.json beside tokenizer.json).
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { type ColumnSource, parquetWriteFile, type SchemaElement } from 'hyparquet-writer';
import { afterAll, describe, expect, it } from 'vitest';

import {
  buildFeeds,
  collectExamples,
  encodeExample,
  type Example,
  inputRoles,
  lengthBatches,
  loadTokenizer,
  readExamples,
} from '../../../agent/index.js';
import { ErrorCode, GramfuseError } from '../../../shared/index.js';
import { EXAMPLE_DATA, EXAMPLE_TOKENIZER } from '../../helpers/examples.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-formats-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const parquet = (name: string, columnData: ColumnSource[], options: { rowGroupSize?: number; schema?: SchemaElement[] } = {}): string => {
  const filename = join(work, name);
  parquetWriteFile({ filename, columnData, ...options });
  return filename;
};
const all = async (path: string, options: Parameters<typeof readExamples>[1] = {}): Promise<Example[]> => {
  const out: Example[] = [];
  for await (const e of readExamples(path, options)) out.push(e);
  return out;
};
const failure = async (promise: Promise<unknown>): Promise<GramfuseError> => {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(GramfuseError);
  return error as GramfuseError;
};

// 70 real rows of the example data: with 16 rows per row group, five groups, the last one short.
const rows = readFileSync(EXAMPLE_DATA('org0'), 'utf8')
  .split('\n')
  .filter((l) => l.trim() !== '')
  .slice(0, 70)
  .map((l) => JSON.parse(l) as { id: string; text: string; label: string });

describe('Parquet data', () => {
  it('read back a row group at a time, it gives the same examples and token batches as the JSONL it was written from', async () => {
    const jsonl = join(work, 'same.jsonl');
    writeFileSync(jsonl, rows.map((r) => JSON.stringify(r)).join('\n'));
    const path = parquet(
      'same.parquet',
      [
        { name: 'id', data: rows.map((r) => r.id), type: 'STRING' },
        { name: 'text', data: rows.map((r) => r.text), type: 'STRING' },
        { name: 'label', data: rows.map((r) => r.label), type: 'STRING' },
      ],
      { rowGroupSize: 16 },
    );
    const fromParquet = await all(path);
    const fromJsonl = await all(jsonl);
    expect(fromParquet).toHaveLength(70);
    expect(fromParquet).toEqual(fromJsonl);
    expect(fromParquet.map((e) => e.line)).toEqual(rows.map((_, i) => i + 1));

    // What the model is fed: the same length-bucketed batches, the same input_ids and attention masks.
    const tokenizer = await loadTokenizer(EXAMPLE_TOKENIZER, { maxLength: 48 });
    const inputs = [
      { name: 'input_ids', dtype: 'int64', dims: ['batch', 'sequence'] },
      { name: 'attention_mask', dtype: 'int64', dims: ['batch', 'sequence'] },
    ];
    const feeds = (examples: Example[]) => {
      const encoded = examples.map((e) => tokenizer.encode(e.text, e.pair));
      return lengthBatches(encoded, 8).map((batch) => {
        const f = buildFeeds(
          batch.map((i) => encoded[i]!),
          inputs,
          inputRoles(inputs),
          tokenizer.padId,
        );
        return {
          dims: f.input_ids!.dims,
          ids: [...(f.input_ids!.data as BigInt64Array)],
          mask: [...(f.attention_mask!.data as BigInt64Array)],
        };
      });
    };
    const batches = feeds(fromParquet);
    expect(batches).toHaveLength(9);
    expect(batches).toEqual(feeds(fromJsonl));
  });

  it('rows stream a row group at a time: a damaged third group fails only after the first two were yielded', async () => {
    const path = parquet('damaged.parquet', [{ name: 'text', data: rows.map((r) => r.text), type: 'STRING' }], { rowGroupSize: 16 });
    const { asyncBufferFromFile, parquetMetadataAsync } = await import('hyparquet');
    const chunk = (await parquetMetadataAsync(await asyncBufferFromFile(path))).row_groups[2]!.columns[0]!.meta_data!;
    const bytes = readFileSync(path);
    const start = Number(chunk.dictionary_page_offset ?? chunk.data_page_offset);
    bytes.fill(0xff, start, start + Number(chunk.total_compressed_size));
    writeFileSync(path, bytes);
    const seen: number[] = [];
    const error = await failure(
      (async () => {
        for await (const e of readExamples(path)) seen.push(e.line);
      })(),
    );
    // A reader that decoded the whole file first would have yielded nothing.
    expect(seen).toEqual(Array.from({ length: 32 }, (_, i) => i + 1));
    expect(error.code).toBe(ErrorCode.InvalidData);
    expect(error.message).toMatch(/damaged\.parquet: rows 33–48 cannot be read/);
  });

  it('integer labels, a pair column, nulls and the seeded subset work as in JSONL', async () => {
    const path = parquet('pairs.parquet', [
      { name: 'premise', data: ['A cat sits', 'Dogs bark', 'Birds sing'], type: 'STRING' },
      { name: 'hypothesis', data: ['A cat', 'Quiet', 'Loud'], type: 'STRING' },
      { name: 'label', data: [0n, 1n, null], type: 'INT64' },
    ]);
    expect(await all(path, { textField: 'premise', textPairField: 'hypothesis' })).toEqual([
      { text: 'A cat sits', pair: 'A cat', label: '0', line: 1 },
      { text: 'Dogs bark', pair: 'Quiet', label: '1', line: 2 },
      { text: 'Birds sing', pair: 'Loud', line: 3 },
    ]);
    const missing = await failure(collectExamples(path, { textField: 'premise', requireLabel: true }));
    expect(missing.code).toBe(ErrorCode.InvalidData);
    expect(missing.message).toMatch(/pairs\.parquet:3: field "label" is missing/);
  });

  it("a 🤗 datasets ClassLabel column's integers read as its names (the file's huggingface metadata)", async () => {
    const features = { text: { dtype: 'string', _type: 'Value' }, label: { names: ['libs', 'devel', 'python'], _type: 'ClassLabel' } };
    const path = join(work, 'classlabel.parquet');
    parquetWriteFile({
      filename: path,
      kvMetadata: [{ key: 'huggingface', value: JSON.stringify({ info: { features } }) }],
      columnData: [
        { name: 'text', data: ['a', 'b', 'c'], type: 'STRING' },
        { name: 'label', data: [2n, 0n, 7n], type: 'INT64' },
      ],
    });
    expect((await all(path)).map((e) => e.label)).toEqual(['python', 'libs', '7']);
  });

  it('a missing text column names the columns there are and the flag; a wrong type names both types', async () => {
    const path = parquet('columns.parquet', [
      { name: 'sentence', data: ['one', 'two'], type: 'STRING' },
      { name: 'score', data: [1.5, 2.5], type: 'DOUBLE' },
      { name: 'count', data: [1, 2], type: 'INT32' },
    ]);
    const noText = await failure(all(path));
    expect(noText.code).toBe(ErrorCode.InvalidData);
    expect(noText.message).toMatch(/columns\.parquet: no column "text" \(columns: sentence, score, count\); use --text-field/);
    const wrongText = await failure(all(path, { textField: 'count' }));
    expect(wrongText.message).toMatch(/column "count" is an integer \(INT32\), expected a string column; use --text-field/);
    const wrongLabel = await failure(all(path, { textField: 'sentence', labelField: 'score' }));
    expect(wrongLabel.message).toMatch(/column "score" is DOUBLE, expected a string or an integer column; use --label-field/);
    const noLabel = await failure(all(path, { textField: 'sentence', requireLabel: true }));
    expect(noLabel.message).toMatch(/no column "label" \(columns: sentence, score, count\); use --label-field/);
    const noPair = await failure(all(path, { textField: 'sentence', textPairField: 'other' }));
    expect(noPair.message).toMatch(/no column "other" .*--text-pair-field/);
  });

  it('a file that is not Parquet, or compressed with a codec the reader lacks, is INVALID_DATA naming the fix', async () => {
    const bad = join(work, 'not.parquet');
    writeFileSync(bad, '{"text": "jsonl under a parquet name"}\n');
    const notParquet = await failure(all(bad));
    expect(notParquet.code).toBe(ErrorCode.InvalidData);
    expect(notParquet.message).toMatch(/not\.parquet: not a readable Parquet file/);
    const gzip = join(work, 'gzip.parquet');
    parquetWriteFile({
      filename: gzip,
      codec: 'GZIP',
      // A stand-in compressor: the reader must refuse the codec before it decodes a byte.
      compressors: { GZIP: (bytes: Uint8Array) => bytes },
      columnData: [{ name: 'text', data: ['a', 'b'], type: 'STRING' }],
    });
    const codec = await failure(all(gzip));
    expect(codec.code).toBe(ErrorCode.InvalidData);
    expect(codec.message).toMatch(/compressed with GZIP, .*SNAPPY or UNCOMPRESSED; rewrite it with snappy/);
  });
});

/**
 * The chat template of the tiny decoder fixtures (../shared/fixtures/hf/tiny/llama-a/tokenizer_config.json), copied
 * here so this test runs on a clone without the fixtures; the integration test chat-data.test.ts uses the file itself.
 */
const FIXTURE_TEMPLATE =
  '{% for m in messages %}{{ "[CLS] " if loop.first else "" }}{{ m["role"] }}: {{ m["content"] }} [SEP] {% endfor %}{% if add_generation_prompt %}assistant:{% endif %}';

/** A checkpoint directory: the example tokenizer.json, and a tokenizer_config.json (and chat_template.jinja) as given. */
const checkpoint = (name: string, config: object | undefined, jinja?: string): string => {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  copyFileSync(EXAMPLE_TOKENIZER, join(dir, 'tokenizer.json'));
  if (config !== undefined) writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  if (jinja !== undefined) writeFileSync(join(dir, 'chat_template.jinja'), jinja);
  return join(dir, 'tokenizer.json');
};
const jsonl = (name: string, lines: readonly object[]): string => {
  const path = join(work, name);
  writeFileSync(path, lines.map((l) => JSON.stringify(l)).join('\n'));
  return path;
};
const conversation = [
  { role: 'system', content: 'You sort Debian packages.' },
  { role: 'user', content: 'What is libfoo-dev?' },
  { role: 'assistant', content: 'Development files for libfoo.' },
];

describe('chat data', () => {
  const fixtureLike = { bos_token: '[CLS]', eos_token: '[SEP]', pad_token: '[PAD]', chat_template: FIXTURE_TEMPLATE };

  it('{"messages"} rows are rendered with the checkpoint template (as written out by hand) and encoded without added specials', async () => {
    const tokenizer = await loadTokenizer(checkpoint('fixture-like', fixtureLike), { maxLength: 64 });
    expect(tokenizer.chatTemplate.available).toBe(true);
    const path = jsonl('chat.jsonl', [{ messages: conversation }, { messages: conversation.slice(1, 2), label: 'libdevel' }]);
    const examples = await all(path, { chatTemplate: tokenizer.chatTemplate });
    // The fixture's template by hand: "[CLS] " before the first turn, then "role: content [SEP] " per turn.
    const expected =
      '[CLS] system: You sort Debian packages. [SEP] user: What is libfoo-dev? [SEP] assistant: Development files for libfoo. [SEP] ';
    expect(examples).toEqual([
      { text: expected, line: 1, format: 'chat' },
      { text: '[CLS] user: What is libfoo-dev? [SEP] ', line: 2, label: 'libdevel', format: 'chat' },
    ]);
    // The template's [CLS] is the only one: the tokenizer's post-processor adds none ([CLS] … [SEP] again) to a chat.
    const ids = encodeExample(tokenizer, examples[1]!).ids;
    const cls = encodeExample(tokenizer, { text: 'x' }).ids[0]!;
    const sep = encodeExample(tokenizer, { text: 'x' }).ids.at(-1)!;
    expect(ids[0]).toBe(cls);
    expect(ids.filter((id) => id === cls)).toHaveLength(1);
    expect(ids.filter((id) => id === sep)).toHaveLength(1);
    expect(ids).toEqual(tokenizer.encode('[CLS] user: What is libfoo-dev? [SEP] ', undefined, { addSpecialTokens: false }).ids);
    expect(ids).toEqual(tokenizer.encode('user: What is libfoo-dev?').ids);
  });

  it("the template gets the file's bos/eos tokens (plain or AddedToken objects); chat_template.jinja beside it wins", async () => {
    const template = '{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}';
    const config = { bos_token: { content: '<s>', __type: 'AddedToken' }, eos_token: '</s>', chat_template: template };
    const tokenizer = await loadTokenizer(checkpoint('bos-eos', config));
    const rendered = tokenizer.chatTemplate.render(conversation.slice(1), 'here');
    expect(rendered).toBe('<s><user>What is libfoo-dev?</s><assistant>Development files for libfoo.</s>');
    const named = await loadTokenizer(checkpoint('named', { ...config, chat_template: [{ name: 'default', template }] }));
    expect(named.chatTemplate.render(conversation.slice(1, 2), 'here')).toBe('<s><user>What is libfoo-dev?</s>');
    // transformers compiles templates with trim_blocks and lstrip_blocks: the newline after a block tag and the
    // indentation before one vanish, those around {{ … }} stay. Real templates (Llama 3's, Qwen's) rely on it. The
    // expected string is Python Jinja2 3.1's for Environment(trim_blocks=True, lstrip_blocks=True), checked once by hand.
    const multiline = await loadTokenizer(
      checkpoint('multiline', {
        chat_template: '{% for m in messages %}\n  {{ m.role }}\n  {% if m.role == "user" %}\n?{% endif %}\n{% endfor %}',
      }),
    );
    expect(multiline.chatTemplate.render(conversation.slice(1), 'here')).toBe('  user\n?  assistant\n');
    const jinja = await loadTokenizer(checkpoint('jinja', config, '{% for m in messages %}[{{ m.content }}]{% endfor %}'));
    expect(jinja.chatTemplate.source).toMatch(/chat_template\.jinja$/);
    expect(jinja.chatTemplate.render(conversation.slice(1), 'here')).toBe('[What is libfoo-dev?][Development files for libfoo.]');
  });

  it('{"prompt", "completion"} rows: strings are concatenated (specials added as for text), message lists rendered', async () => {
    const tokenizer = await loadTokenizer(checkpoint('fixture-like', fixtureLike), { maxLength: 64 });
    const path = jsonl('prompt.jsonl', [
      { prompt: 'The package libfoo-dev is ', completion: 'in libdevel.' },
      { prompt: conversation.slice(1, 2), completion: conversation.slice(2) },
    ]);
    const [plain, chat] = await all(path, { chatTemplate: tokenizer.chatTemplate });
    expect(plain).toEqual({ text: 'The package libfoo-dev is in libdevel.', line: 1, format: 'prompt_completion' });
    expect(encodeExample(tokenizer, plain!).ids).toEqual(tokenizer.encode('The package libfoo-dev is in libdevel.').ids);
    expect(chat).toEqual({
      text: '[CLS] user: What is libfoo-dev? [SEP] assistant: Development files for libfoo. [SEP] ',
      line: 2,
      format: 'chat',
    });
    const mixed = jsonl('mixed.jsonl', [{ prompt: 'a string', completion: conversation }]);
    const error = await failure(all(mixed, { chatTemplate: tokenizer.chatTemplate }));
    expect(error.message).toMatch(/mixed\.jsonl:1: "prompt" is a string and "completion" is a list; both must be strings, or both lists/);
  });

  it('Parquet chat data (a list<struct<role, content>> column, as Hugging Face datasets write it) renders like JSONL', async () => {
    const tokenizer = await loadTokenizer(checkpoint('fixture-like', fixtureLike));
    const conversations = [conversation, conversation.slice(1, 2)];
    const path = parquet('chat.parquet', [{ name: 'messages', data: conversations }], {
      schema: [
        { name: 'root', num_children: 1 },
        { name: 'messages', repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
        { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
        { name: 'element', repetition_type: 'OPTIONAL', num_children: 2 },
        { name: 'role', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
        { name: 'content', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
      ],
    });
    const fromJsonl = await all(
      jsonl(
        'chat-same.jsonl',
        conversations.map((messages) => ({ messages })),
      ),
      { chatTemplate: tokenizer.chatTemplate },
    );
    expect(await all(path, { chatTemplate: tokenizer.chatTemplate })).toEqual(fromJsonl);
  });

  it('chat data without a template is INVALID_DATA naming tokenizer_config.json and the fix, before any row is used', async () => {
    const path = jsonl('chat-only.jsonl', [{ messages: conversation }]);
    for (const [name, config] of [
      ['no-template', { bos_token: '[CLS]' }],
      ['no-config', undefined],
    ] as const) {
      const tokenizer = await loadTokenizer(checkpoint(name, config));
      expect(tokenizer.chatTemplate.available).toBe(false);
      const error = await failure(collectExamples(path, { chatTemplate: tokenizer.chatTemplate }));
      expect(error.code).toBe(ErrorCode.InvalidData);
      expect(error.message).toContain(`chat-only.jsonl:1: chat data needs the model's chat template`);
      expect(error.message).toContain(join(work, name, 'tokenizer_config.json'));
      expect(error.message).toMatch(
        /put the checkpoint's own tokenizer_config\.json \(with its chat_template\) beside the tokenizer\.json/,
      );
    }
    // Text rows need no template.
    const text = jsonl('text-only.jsonl', [{ text: 'plain' }]);
    expect(await collectExamples(text, { chatTemplate: (await loadTokenizer(checkpoint('no-config', undefined))).chatTemplate })).toEqual([
      { text: 'plain', line: 1 },
    ]);
  });

  it('malformed turns, and a conversation the template refuses (raise_exception), name the line', async () => {
    const strict =
      '{% for m in messages %}{% if m.role == "system" %}{{ raise_exception("System role not supported") }}{% endif %}{{ m.content }}{% endfor %}';
    const tokenizer = await loadTokenizer(checkpoint('strict', { chat_template: strict }));
    const chatTemplate = tokenizer.chatTemplate;
    const refused = await failure(all(jsonl('refused.jsonl', [{ messages: conversation }]), { chatTemplate }));
    expect(refused.code).toBe(ErrorCode.InvalidData);
    expect(refused.message).toMatch(
      /refused\.jsonl:1: the chat template of .*tokenizer_config\.json refused this conversation: .*System role not supported/,
    );
    const cases: [object, RegExp][] = [
      [{ messages: 'hello' }, /"messages" is a string, expected a non-empty list/],
      [{ messages: [] }, /"messages" is a list, expected a non-empty list/],
      [{ messages: [{ content: 'no role' }] }, /"messages" \[0\]\.role is missing, expected a string/],
      [{ messages: [{ role: 'user', content: 7 }] }, /"messages" \[0\]\.content is a number, expected a string/],
    ];
    for (const [line, message] of cases) {
      const error = await failure(all(jsonl('bad-turn.jsonl', [line]), { chatTemplate }));
      expect(error.code).toBe(ErrorCode.InvalidData);
      expect(error.message).toMatch(message);
    }
    const broken = join(work, 'broken-template');
    mkdirSync(broken, { recursive: true });
    copyFileSync(EXAMPLE_TOKENIZER, join(broken, 'tokenizer.json'));
    writeFileSync(join(broken, 'tokenizer_config.json'), JSON.stringify({ chat_template: '{% for m in messages %}' }));
    const parse = await failure(loadTokenizer(join(broken, 'tokenizer.json')));
    expect(parse.message).toMatch(/tokenizer_config\.json: the chat template does not parse/);
  });
});
