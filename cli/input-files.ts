// The files a command reads, checked before it does anything else (loads a model, connects, starts a server): a
// missing path, a directory where a file belongs (or the reverse), a file this user cannot read and an empty file
// each get their own coded error naming the flag and the path — never INTERNAL from deep inside a reader.
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { type ErrorCode as Code, ErrorCode, GramfuseError } from '../shared/errors.js';

/** One input of a command. */
export interface InputFile {
  /** How the user named it: `--model`, `<model>`. */
  readonly flag: string;
  /** The path (or the paths of a repeatable flag); absent: not given, nothing to check. */
  readonly path: string | readonly string[] | undefined;
  /** `model`: a file (.onnx) or a Hugging Face checkpoint directory (one with config.json). @default 'file' */
  readonly kind?: 'file' | 'directory' | 'model';
  /**
   * What an empty file is: its code and the next step (a model: ONNX_MALFORMED; a ledger: AUDIT_INVALID). Absent: an
   * empty file is left to the reader.
   */
  readonly empty?: { readonly code: Code; readonly fix: string };
}

/** An empty-file rule for the common kinds of input. */
export const EMPTY = {
  model: { code: ErrorCode.OnnxMalformed, fix: 'not an ONNX model; export the model again or check the path' },
  data: { code: ErrorCode.InvalidData, fix: 'no examples to read; give a .jsonl, .csv or .parquet file with rows' },
  tokenizer: { code: ErrorCode.InvalidData, fix: 'pass a HuggingFace tokenizer.json' },
  labels: { code: ErrorCode.InvalidData, fix: 'write the labels as a JSON list in logit order' },
  ledger: { code: ErrorCode.AuditInvalid, fix: 'a ledger starts with its ledger.opened record; give the audit.jsonl its writer keeps' },
  keys: { code: ErrorCode.InvalidArgument, fix: 'give a public key (PEM)' },
  config: { code: ErrorCode.InvalidArgument, fix: 'write the settings (YAML or JSON) or leave the flag out' },
  pem: { code: ErrorCode.InvalidArgument, fix: 'give the PEM file `gramfuse certs init|issue` wrote' },
} as const satisfies Record<string, InputFile['empty']>;

/** Checks every input in order; the first problem is thrown. */
export async function checkInputFiles(inputs: readonly InputFile[]): Promise<void> {
  for (const input of inputs) {
    const paths = input.path === undefined ? [] : typeof input.path === 'string' ? [input.path] : input.path;
    for (const path of paths) await checkInputFile(input, path);
  }
}

async function checkInputFile(input: InputFile, path: string): Promise<void> {
  const asked = input.kind ?? 'file';
  const problem = (code: Code, text: string): GramfuseError =>
    new GramfuseError(code, `${input.flag} ${path}: ${text}`, { facts: { flag: input.flag, path } });
  const info = await stat(path).catch((error: unknown) => {
    const errno = (error as NodeJS.ErrnoException).code;
    if (errno === 'ENOENT' || errno === 'ENOTDIR') throw problem(ErrorCode.FileNotFound, 'no such file or directory; check the path');
    if (errno === 'EACCES') throw problem(ErrorCode.FileAccess, 'cannot be reached (permission denied on a directory above it)');
    throw problem(ErrorCode.FileAccess, `cannot be read (${(error as Error).message})`);
  });
  const kind = asked === 'model' ? (info.isDirectory() ? 'directory' : 'file') : asked;
  if (kind === 'file' && info.isDirectory()) throw problem(ErrorCode.FileAccess, 'is a directory; give the file itself');
  if (kind === 'directory' && !info.isDirectory()) throw problem(ErrorCode.FileAccess, 'is not a directory; give the directory');
  await access(path, kind === 'directory' ? constants.R_OK | constants.X_OK : constants.R_OK).catch(() => {
    throw problem(
      ErrorCode.FileAccess,
      `cannot be read by this user (permission denied, mode ${(info.mode & 0o777).toString(8).padStart(4, '0')}); make it readable (chmod u+r) or run as its owner`,
    );
  });
  if (asked === 'model' && kind === 'directory') {
    const config = join(path, 'config.json');
    if ((await stat(config).catch(() => undefined))?.isFile() !== true)
      throw new GramfuseError(
        ErrorCode.FileNotFound,
        `${input.flag} ${config}: no such file; a model is an .onnx file or a Hugging Face checkpoint directory with config.json`,
        { facts: { flag: input.flag, path: config } },
      );
  }
  if (kind === 'file' && info.isFile() && info.size === 0 && input.empty !== undefined)
    throw problem(input.empty.code, `the file is empty; ${input.empty.fix}`);
}

/** The mTLS files of a command (--tls-ca, --tls-cert, --tls-key), when given. */
export function tlsInputs(flags: {
  readonly tlsCa?: string | undefined;
  readonly tlsCert?: string | undefined;
  readonly tlsKey?: string | undefined;
}): InputFile[] {
  return [
    { flag: '--tls-ca', path: flags.tlsCa, empty: EMPTY.pem },
    { flag: '--tls-cert', path: flags.tlsCert, empty: EMPTY.pem },
    { flag: '--tls-key', path: flags.tlsKey, empty: EMPTY.pem },
  ];
}
