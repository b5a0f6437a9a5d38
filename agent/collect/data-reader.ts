import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';

import { parse } from 'csv-parse';
import {
  asyncBufferFromFile,
  type FileMetaData,
  parquetMetadataAsync,
  parquetReadObjects,
  parquetSchema,
  type SchemaTree,
} from 'hyparquet';

import { ErrorCode, fileError, GramfuseError } from '../../shared/index.js';
import type { ChatMessage, ChatTemplate } from './chat-template.js';

/** One labelled (or unlabelled) example read from a data file. */
export interface Example {
  readonly text: string;
  readonly pair?: string;
  readonly label?: string;
  /** 1-based line (JSONL), record (CSV, header excluded) or row (Parquet) number, for messages. */
  readonly line: number;
  /**
   * Where `text` came from when not a text field: `chat`, a conversation rendered with the model's chat template (its
   * special tokens are in the text, so it is encoded without adding any, as transformers' apply_chat_template does);
   * `prompt_completion`, prompt and completion concatenated (encoded like any text).
   */
  readonly format?: 'chat' | 'prompt_completion';
}

export interface DataReaderOptions {
  /** Field holding the text. Default `text`. */
  readonly textField?: string;
  /** Field holding the second text of a sentence pair, if any. Default none. */
  readonly textPairField?: string;
  /** Field holding the label. Default `label`; set `requireLabel` to demand it. */
  readonly labelField?: string;
  /** Fail on a row without a label (evaluation). Default false. */
  readonly requireLabel?: boolean;
  /**
   * The model's chat template (the tokenizer's `chatTemplate`), which renders rows without the text field that hold
   * `{"messages": [{"role", "content"}, …]}` or conversational `{"prompt": [...], "completion": [...]}`. Without one,
   * such a row is an INVALID_DATA error naming tokenizer_config.json.
   */
  readonly chatTemplate?: ChatTemplate;
}

/** Fields that hold chat and prompt/completion data (the Hugging Face datasets' conventions, as TRL reads them). */
const MESSAGES = 'messages';
const PROMPT = 'prompt';
const COMPLETION = 'completion';

/**
 * Streams examples from a `.jsonl`, `.csv` (header row) or `.parquet` file, never holding the whole file (Parquet:
 * one row group of the columns used at a time). A row's text is its text field; a row without one may be chat data
 * (`messages`, rendered with `chatTemplate`) or `prompt` + `completion`.
 */
export async function* readExamples(path: string, options: DataReaderOptions = {}): AsyncGenerator<Example> {
  try {
    const info = await stat(path);
    if (!info.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EISDIR' });
  } catch (error) {
    throw fileError(error, path, 'reading the data file');
  }
  const fields: Fields = {
    text: options.textField ?? 'text',
    label: options.labelField ?? 'label',
    requireLabel: options.requireLabel === true,
    ...(options.textPairField === undefined ? {} : { pair: options.textPairField }),
    ...(options.chatTemplate === undefined ? {} : { chatTemplate: options.chatTemplate }),
  };
  const lower = path.toLowerCase();
  const rows = lower.endsWith('.csv') ? csvRows(path) : lower.endsWith('.parquet') ? parquetRows(path, fields) : jsonlRows(path);
  for await (const { record, line } of rows) yield toExample(record, line, path, fields);
}

interface Fields {
  readonly text: string;
  readonly pair?: string;
  readonly label: string;
  readonly requireLabel: boolean;
  readonly chatTemplate?: ChatTemplate;
}

const present = (value: unknown): boolean => value !== undefined && value !== null;

function toExample(record: Record<string, unknown>, line: number, path: string, fields: Fields): Example {
  const where = `${path}:${line}`;
  const field = (name: string, required: boolean): string | undefined => {
    const value = record[name];
    if (value === undefined || value === null || value === '') {
      if (!required) return undefined;
      const names = Object.keys(record).join(', ');
      const flag = name === fields.text ? 'text' : name === fields.label ? 'label' : 'text-pair';
      const chat =
        name === fields.text
          ? `, or give chat data as {"${MESSAGES}": [{"role", "content"}, …]} or {"${PROMPT}", "${COMPLETION}"} rows`
          : '';
      throw new GramfuseError(
        ErrorCode.InvalidData,
        `${where}: field "${name}" is missing (fields: ${names}); use --${flag}-field to name the right one${chat}`,
        {
          facts: { path, line, field: name },
        },
      );
    }
    if (typeof value === 'bigint') return String(value);
    if (typeof value !== 'string' && typeof value !== 'number') {
      throw new GramfuseError(ErrorCode.InvalidData, `${where}: field "${name}" is ${kindOf(value)}, expected a string`, {
        facts: { path, line, field: name },
      });
    }
    return String(value);
  };
  let text: string;
  let format: Example['format'];
  if (!present(record[fields.text]) && present(record[MESSAGES])) {
    text = render(fields, chatMessages(record[MESSAGES], MESSAGES, where, path, line), where);
    format = 'chat';
  } else if (!present(record[fields.text]) && present(record[PROMPT]) && present(record[COMPLETION])) {
    const prompt = record[PROMPT];
    const completion = record[COMPLETION];
    if (typeof prompt === 'string' && typeof completion === 'string') {
      text = prompt + completion;
      format = 'prompt_completion';
    } else if (Array.isArray(prompt) && Array.isArray(completion)) {
      // Conversational prompt/completion (TRL's format): one conversation, rendered like "messages".
      const messages = [...chatMessages(prompt, PROMPT, where, path, line), ...chatMessages(completion, COMPLETION, where, path, line)];
      text = render(fields, messages, where);
      format = 'chat';
    } else {
      throw new GramfuseError(
        ErrorCode.InvalidData,
        `${where}: "${PROMPT}" is ${kindOf(prompt)} and "${COMPLETION}" is ${kindOf(completion)}; both must be strings, or both lists of {"role", "content"}`,
        { facts: { path, line, field: PROMPT } },
      );
    }
  } else {
    text = field(fields.text, true)!;
  }
  const pair = fields.pair === undefined ? undefined : field(fields.pair, true);
  const label = field(fields.label, fields.requireLabel);
  return {
    text,
    line,
    ...(pair === undefined ? {} : { pair }),
    ...(label === undefined ? {} : { label }),
    ...(format === undefined ? {} : { format }),
  };
}

function render(fields: Fields, messages: ChatMessage[], where: string): string {
  if (fields.chatTemplate === undefined) {
    throw new GramfuseError(
      ErrorCode.InvalidData,
      `${where}: chat data needs the model's chat template, and none was given; pass the checkpoint's tokenizer (its tokenizer_config.json beside tokenizer.json holds the template)`,
      { facts: { where } },
    );
  }
  return fields.chatTemplate.render(messages, where);
}

function chatMessages(value: unknown, name: string, where: string, path: string, line: number): ChatMessage[] {
  const fail = (what: string): never => {
    throw new GramfuseError(
      ErrorCode.InvalidData,
      `${where}: "${name}" ${what}; chat data is a list of {"role": "user", "content": "…"} turns`,
      {
        facts: { path, line, field: name },
      },
    );
  };
  if (!Array.isArray(value) || value.length === 0) return fail(`is ${kindOf(value)}, expected a non-empty list`);
  return value.map((turn: unknown, i) => {
    if (typeof turn !== 'object' || turn === null || Array.isArray(turn)) return fail(`[${i}] is ${kindOf(turn)}, expected an object`);
    const { role, content } = turn as Record<string, unknown>;
    if (typeof role !== 'string' || role === '') return fail(`[${i}].role is ${kindOf(role)}, expected a string`);
    if (typeof content !== 'string' && !Array.isArray(content)) return fail(`[${i}].content is ${kindOf(content)}, expected a string`);
    return turn as ChatMessage;
  });
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'missing';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

async function* jsonlRows(path: string): AsyncGenerator<{ record: Record<string, unknown>; line: number }> {
  const lines = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
  let line = 0;
  for await (const text of lines) {
    line++;
    if (text.trim() === '') continue;
    let record: unknown;
    try {
      record = JSON.parse(text);
    } catch (error) {
      throw new GramfuseError(
        ErrorCode.InvalidData,
        `${path}:${line}: not valid JSON (${(error as Error).message}); each line must be one JSON object`,
        {
          facts: { path, line },
          cause: error,
        },
      );
    }
    if (typeof record !== 'object' || record === null || Array.isArray(record)) {
      throw new GramfuseError(
        ErrorCode.InvalidData,
        `${path}:${line}: expected a JSON object, found ${Array.isArray(record) ? 'an array' : typeof record}`,
        { facts: { path, line } },
      );
    }
    yield { record: record as Record<string, unknown>, line };
  }
}

async function* csvRows(path: string): AsyncGenerator<{ record: Record<string, unknown>; line: number }> {
  const parser = createReadStream(path).pipe(parse({ columns: true, bom: true, skip_empty_lines: true, relax_column_count: false }));
  let record = 0;
  try {
    for await (const row of parser) {
      record++;
      yield { record: row as Record<string, unknown>, line: record };
    }
  } catch (error) {
    const lines = (error as { lines?: number }).lines;
    throw new GramfuseError(ErrorCode.InvalidData, `${path}:${lines ?? record + 1}: malformed CSV (${(error as Error).message})`, {
      facts: { path, line: lines ?? record + 1 },
      cause: error,
    });
  }
}

/**
 * Parquet rows, one row group at a time and only the columns an example needs, so memory holds one row group of
 * those columns (the writer chose its size; Parquet cannot be decoded in smaller pieces without a page index). The
 * columns are checked against the schema before any row is read.
 */
async function* parquetRows(path: string, fields: Fields): AsyncGenerator<{ record: Record<string, unknown>; line: number }> {
  const invalid = (message: string, cause?: unknown): GramfuseError =>
    new GramfuseError(ErrorCode.InvalidData, `${path}: ${message}`, { facts: { path }, ...(cause === undefined ? {} : { cause }) });
  let file: Awaited<ReturnType<typeof asyncBufferFromFile>>;
  let metadata: FileMetaData;
  try {
    file = await asyncBufferFromFile(path);
    metadata = await parquetMetadataAsync(file);
  } catch (error) {
    if (typeof (error as NodeJS.ErrnoException).code === 'string') throw fileError(error, path, 'reading the data file');
    throw invalid(`not a readable Parquet file (${(error as Error).message}); write the data as Parquet, JSONL or CSV`, error);
  }
  const columns = new Map(parquetSchema(metadata).children.map((c) => [c.element.name, c]));
  const names = [...columns.keys()].join(', ');
  const check = (name: string, flag: string, allowed: readonly ColumnKind[]): string => {
    const column = columns.get(name)!;
    const kind = columnKind(column);
    if (!allowed.includes(kind.kind)) {
      throw invalid(
        `column "${name}" is ${kind.described}, expected ${allowed.map((a) => (a === 'integer' ? 'an integer' : `a ${a}`)).join(' or ')} column; ${flag}`,
      );
    }
    return name;
  };
  const wanted: string[] = [];
  if (columns.has(fields.text)) wanted.push(check(fields.text, 'use --text-field to name the text column', ['string']));
  else if (columns.has(MESSAGES)) wanted.push(check(MESSAGES, 'chat data is a list of {role, content} per row', ['list']));
  else if (columns.has(PROMPT) && columns.has(COMPLETION)) {
    const how = 'prompt and completion are strings, or lists of {role, content}';
    wanted.push(check(PROMPT, how, ['string', 'list']), check(COMPLETION, how, ['string', 'list']));
  } else {
    throw invalid(
      `no column "${fields.text}" (columns: ${names}); use --text-field to name the text column, or give chat data as a "${MESSAGES}" column (a list of {role, content}) or "${PROMPT}" and "${COMPLETION}" columns`,
    );
  }
  if (fields.pair !== undefined) {
    if (!columns.has(fields.pair))
      throw invalid(`no column "${fields.pair}" (columns: ${names}); use --text-pair-field to name the right one`);
    wanted.push(check(fields.pair, 'use --text-pair-field to name the right one', ['string']));
  }
  if (columns.has(fields.label)) wanted.push(check(fields.label, 'use --label-field to name the right one', ['string', 'integer']));
  else if (fields.requireLabel) throw invalid(`no column "${fields.label}" (columns: ${names}); use --label-field to name the right one`);
  const labelNames = classLabelNames(metadata, fields.label);
  let start = 0;
  for (const group of metadata.row_groups) {
    const end = start + Number(group.num_rows);
    let rows: Record<string, unknown>[];
    try {
      rows = await parquetReadObjects({ file, metadata, columns: wanted, rowStart: start, rowEnd: end });
    } catch (error) {
      const codec = /unsupported compression codec: (\w+)/.exec((error as Error).message)?.[1];
      if (codec !== undefined) {
        throw invalid(
          `compressed with ${codec}, which gramfuse's Parquet reader decodes only as SNAPPY or UNCOMPRESSED; rewrite it with snappy (pyarrow: pq.write_table(table, path, compression="snappy")) or as JSONL`,
          error,
        );
      }
      throw invalid(`rows ${start + 1}–${end} cannot be read (${(error as Error).message})`, error);
    }
    for (const [i, record] of rows.entries()) {
      const label = record[fields.label];
      if (labelNames !== undefined && (typeof label === 'bigint' || typeof label === 'number')) {
        record[fields.label] = labelNames[Number(label)] ?? label;
      }
      yield { record, line: start + i + 1 };
    }
    start = end;
  }
}

/**
 * The names of a 🤗 datasets ClassLabel column (the file's `huggingface` metadata: `{"info": {"features": {label:
 * {"_type": "ClassLabel", "names": [...]}}}}`), so its integer labels read as the names label lists hold.
 */
function classLabelNames(metadata: FileMetaData, column: string): readonly string[] | undefined {
  const value = metadata.key_value_metadata?.find((kv) => kv.key === 'huggingface')?.value;
  if (value === undefined) return undefined;
  try {
    const parsed = JSON.parse(value) as { info?: { features?: Record<string, { _type?: unknown; names?: unknown }> } };
    const feature = parsed.info?.features?.[column];
    const names = feature?._type === 'ClassLabel' ? feature.names : undefined;
    return Array.isArray(names) && names.every((n) => typeof n === 'string') ? names : undefined;
  } catch {
    return undefined; // metadata another tool wrote: the integer labels stay as they are
  }
}

type ColumnKind = 'string' | 'integer' | 'list' | 'other';

/** What a top-level Parquet column holds, as far as examples care. */
function columnKind(column: SchemaTree): { kind: ColumnKind; described: string } {
  const { type, converted_type: converted, logical_type: logical } = column.element;
  if (column.children.length > 0) {
    const list = converted === 'LIST' || logical?.type === 'LIST';
    return { kind: list ? 'list' : 'other', described: list ? 'a list' : `a group (${converted ?? logical?.type ?? 'struct'})` };
  }
  const annotation = converted ?? logical?.type;
  // A JSON column (hyparquet-writer's and some exporters' way to store nested rows) is parsed on read: its rows are
  // checked as lists where a list is expected.
  if (type === 'BYTE_ARRAY' && annotation === 'JSON') return { kind: 'list', described: 'JSON' };
  if (type === 'BYTE_ARRAY' && (annotation === undefined || annotation === 'UTF8' || annotation === 'STRING'))
    return { kind: 'string', described: 'a string' };
  if (
    (type === 'INT32' || type === 'INT64') &&
    (annotation === undefined || annotation.startsWith('INT') || annotation.startsWith('UINT') || annotation === 'INTEGER')
  )
    return { kind: 'integer', described: `an integer (${type})` };
  return { kind: 'other', described: `${type ?? 'untyped'}${annotation === undefined ? '' : ` (${annotation})`}` };
}

/** A small seeded generator (mulberry32): the same seed picks the same subset on every machine. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Reads every example, or a seeded uniform random subset of `maxExamples` (reservoir sampling, so the
 * file is streamed once and memory holds at most `maxExamples` examples). Order of the file is kept.
 */
export async function collectExamples(
  path: string,
  options: DataReaderOptions & { maxExamples?: number; seed?: number } = {},
): Promise<Example[]> {
  const max = options.maxExamples;
  const out: Example[] = [];
  const random = seededRandom(options.seed ?? 1);
  let seen = 0;
  for await (const example of readExamples(path, options)) {
    seen++;
    if (max === undefined || out.length < max) out.push(example);
    else {
      const j = Math.floor(random() * seen);
      if (j < max) out[j] = example;
    }
  }
  if (out.length === 0) {
    throw new GramfuseError(ErrorCode.InvalidData, `${path}: no usable examples (the file is empty or has only blank lines)`, {
      facts: { path },
    });
  }
  return max === undefined ? out : out.sort((a, b) => a.line - b.line);
}
