import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';

import { parse } from 'csv-parse';

import { ErrorCode, fileError, GramfuseError } from '../../shared/index.js';

/** One labelled (or unlabelled) example read from a data file. */
export interface Example {
  readonly text: string;
  readonly pair?: string;
  readonly label?: string;
  /** 1-based line (JSONL) or record (CSV, header excluded) number, for messages. */
  readonly line: number;
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
}

/** Streams examples from a `.jsonl` or `.csv` (header row) file, never holding the whole file. */
export async function* readExamples(path: string, options: DataReaderOptions = {}): AsyncGenerator<Example> {
  try {
    const info = await stat(path);
    if (!info.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EISDIR' });
  } catch (error) {
    throw fileError(error, path, 'reading the data file');
  }
  const textField = options.textField ?? 'text';
  const labelField = options.labelField ?? 'label';
  const rows = path.toLowerCase().endsWith('.csv') ? csvRows(path) : jsonlRows(path);
  for await (const { record, line } of rows) {
    yield toExample(record, line, path, textField, options.textPairField, labelField, options.requireLabel === true);
  }
}

function toExample(
  record: Record<string, unknown>,
  line: number,
  path: string,
  textField: string,
  pairField: string | undefined,
  labelField: string,
  requireLabel: boolean,
): Example {
  const field = (name: string, required: boolean): string | undefined => {
    const value = record[name];
    if (value === undefined || value === null || value === '') {
      if (!required) return undefined;
      const fields = Object.keys(record).join(', ');
      throw new GramfuseError(
        ErrorCode.InvalidData,
        `${path}:${line}: field "${name}" is missing (fields: ${fields}); use --${name === textField ? 'text' : name === labelField ? 'label' : 'text-pair'}-field to name the right one`,
        {
          facts: { path, line, field: name },
        },
      );
    }
    if (typeof value !== 'string' && typeof value !== 'number') {
      throw new GramfuseError(ErrorCode.InvalidData, `${path}:${line}: field "${name}" is ${typeof value}, expected a string`, {
        facts: { path, line, field: name },
      });
    }
    return String(value);
  };
  const text = field(textField, true)!;
  const pair = pairField === undefined ? undefined : field(pairField, true);
  const label = field(labelField, requireLabel);
  return { text, line, ...(pair === undefined ? {} : { pair }), ...(label === undefined ? {} : { label }) };
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
