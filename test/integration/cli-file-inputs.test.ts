// Issue 37 item 12: every file a CLI command takes, given as a missing path, a directory, an unreadable file and an
// empty file, gets its own coded error naming the path — never INTERNAL ("unexpected error … please report it"),
// never a connection attempt first. One table over the built CLI. Where the tests run as root (chmod 000 does not
// stop root), the unreadable case runs the CLI as the unprivileged uid 65534, so the permission really denies.
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { exitCodeByErrorCode } from '../../shared/index.js';
import { CLI, REPO } from '../helpers/cli.js';
import { EXAMPLE_DATA, exampleModel, EXAMPLE_TOKENIZER } from '../helpers/examples.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-file-inputs-'));
const ROOT = process.getuid?.() === 0;
const NOBODY = 65534;
const M = exampleModel('org0');
const D = EXAMPLE_DATA('org0');
const T = EXAMPLE_TOKENIZER;
/** A coordinator address nothing listens on: a command that connects before checking its files says UNAVAILABLE. */
const NOWHERE = ['--coordinator', '127.0.0.1:1', '--insecure-loopback'];
let spec = '';
let ledger = '';

beforeAll(() => {
  chmodSync(work, 0o777); // the unprivileged run must reach its files (and write its outputs) here
  spec = join(work, 'spec.json');
  writeFileSync(spec, JSON.stringify({ id: 'j', participants: ['org0'] }));
  ledger = join(work, 'audit.jsonl');
  writeFileSync(ledger, ''); // only a name for the second ledger of reconcile: the first is refused before
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

function run(args: readonly string[], asNobody: boolean): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: REPO,
      env: { ...process.env, HOME: work },
      stdio: ['ignore', 'ignore', 'pipe'],
      ...(asNobody ? { uid: NOBODY, gid: NOBODY } : {}),
    });
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000); // a server that started anyway is a failure
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stderr });
    });
  });
}

type Code = keyof typeof exitCodeByErrorCode;
/** One input of one command: its arguments with the input at `f`, and the code an empty file (or directory) gets. */
interface Input {
  readonly name: string;
  readonly args: (f: string, out: string) => string[];
  readonly empty: Code;
  /** A directory input (a checkpoint, a bundle, a CA directory): the "wrong kind" case is then a file. */
  readonly directory?: boolean;
}

const inputs: Input[] = [
  { name: 'inspect <model>', args: (f) => ['inspect', f], empty: 'ONNX_MALFORMED' },
  { name: 'inspect --hf-checkpoint', args: (f) => ['inspect', M, '--hf-checkpoint', f], empty: 'FILE_NOT_FOUND', directory: true },
  { name: 'export <model>', args: (f, o) => ['export', f, '--hf-out', o], empty: 'ONNX_MALFORMED' },
  { name: 'export --tokenizer', args: (f, o) => ['export', M, '--hf-out', o, '--tokenizer', f], empty: 'INVALID_DATA' },
  {
    name: 'export --hf-checkpoint',
    args: (f, o) => ['export', M, '--hf-out', o, '--hf-checkpoint', f],
    empty: 'FILE_NOT_FOUND',
    directory: true,
  },
  {
    name: 'merge --model',
    args: (f, o) => ['merge', '--model', f, '--data', D, '--model', M, '--data', D, '--tokenizer', T, '--out', join(o, 'm.onnx')],
    empty: 'ONNX_MALFORMED',
  },
  {
    name: 'merge --data',
    args: (f, o) => ['merge', '--model', M, '--data', D, '--model', M, '--data', f, '--tokenizer', T, '--out', join(o, 'm.onnx')],
    empty: 'INVALID_DATA',
  },
  {
    name: 'merge --tokenizer',
    args: (f, o) => ['merge', '--model', M, '--data', D, '--model', M, '--data', D, '--tokenizer', f, '--out', join(o, 'm.onnx')],
    empty: 'INVALID_DATA',
  },
  {
    name: 'merge --template',
    args: (f, o) => [
      'merge',
      '--model',
      M,
      '--data',
      D,
      '--model',
      M,
      '--data',
      D,
      '--tokenizer',
      T,
      '--template',
      f,
      '--out',
      join(o, 'm.onnx'),
    ],
    empty: 'ONNX_MALFORMED',
  },
  {
    name: 'merge --base',
    args: (f, o) => ['merge', '--method', 'task-arithmetic', '--model', M, '--model', M, '--base', f, '--out', join(o, 'm.onnx')],
    empty: 'ONNX_MALFORMED',
  },
  {
    name: 'merge --bundle',
    args: (f, o) => ['merge', '--bundle', f, '--bundle', f, '--template', M, '--out', join(o, 'm.onnx')],
    empty: 'BUNDLE_INVALID',
    directory: true,
  },
  { name: 'eval --model', args: (f) => ['eval', '--model', f, '--data', D, '--tokenizer', T], empty: 'ONNX_MALFORMED' },
  { name: 'eval --data', args: (f) => ['eval', '--model', M, '--data', f, '--tokenizer', T], empty: 'INVALID_DATA' },
  { name: 'eval --tokenizer', args: (f) => ['eval', '--model', M, '--data', D, '--tokenizer', f], empty: 'INVALID_DATA' },
  { name: 'eval --labels', args: (f) => ['eval', '--model', M, '--data', D, '--tokenizer', T, '--labels', f], empty: 'INVALID_DATA' },
  { name: 'agent plan --model', args: (f) => ['agent', 'plan', '--model', f, '--data', D, '--tokenizer', T], empty: 'ONNX_MALFORMED' },
  { name: 'agent plan --data', args: (f) => ['agent', 'plan', '--model', M, '--data', f, '--tokenizer', T], empty: 'INVALID_DATA' },
  { name: 'agent plan --tokenizer', args: (f) => ['agent', 'plan', '--model', M, '--data', D, '--tokenizer', f], empty: 'INVALID_DATA' },
  {
    name: 'agent plan --policy',
    args: (f) => ['agent', 'plan', '--model', M, '--data', D, '--tokenizer', T, '--policy', f],
    empty: 'INVALID_ARGUMENT',
  },
  {
    name: 'agent collect --data',
    args: (f, o) => ['agent', 'collect', '--model', M, '--data', f, '--tokenizer', T, '--out', join(o, 'b')],
    empty: 'INVALID_DATA',
  },
  {
    name: 'agent run --model',
    args: (f, o) => [
      'agent',
      'run',
      ...NOWHERE,
      '--identity',
      'org0',
      '--job',
      'j',
      '--model',
      f,
      '--data',
      D,
      '--tokenizer',
      T,
      '--work-dir',
      o,
    ],
    empty: 'ONNX_MALFORMED',
  },
  {
    name: 'agent run --data',
    args: (f, o) => [
      'agent',
      'run',
      ...NOWHERE,
      '--identity',
      'org0',
      '--job',
      'j',
      '--model',
      M,
      '--data',
      f,
      '--tokenizer',
      T,
      '--work-dir',
      o,
    ],
    empty: 'INVALID_DATA',
  },
  {
    name: 'agent run --policy',
    args: (f, o) => [
      'agent',
      'run',
      ...NOWHERE,
      '--identity',
      'org0',
      '--job',
      'j',
      '--model',
      M,
      '--data',
      D,
      '--tokenizer',
      T,
      '--policy',
      f,
      '--work-dir',
      o,
    ],
    empty: 'INVALID_ARGUMENT',
  },
  {
    name: 'agent evaluate --data',
    args: (f, o) => ['agent', 'evaluate', ...NOWHERE, '--identity', 'org0', '--job', 'j', '--data', f, '--tokenizer', T, '--work-dir', o],
    empty: 'INVALID_DATA',
  },
  {
    name: 'job create --template',
    args: (f) => ['job', 'create', ...NOWHERE, '--identity', 'creator', '--spec', spec, '--template', f],
    empty: 'ONNX_MALFORMED',
  },
  {
    name: 'job create --spec',
    args: (f) => ['job', 'create', ...NOWHERE, '--identity', 'creator', '--spec', f, '--template', M],
    empty: 'INVALID_ARGUMENT',
  },
  {
    name: 'job create --tls-ca',
    args: (f) => [
      'job',
      'create',
      '--coordinator',
      '127.0.0.1:1',
      '--tls-ca',
      f,
      '--tls-cert',
      f,
      '--tls-key',
      f,
      '--spec',
      spec,
      '--template',
      M,
    ],
    empty: 'INVALID_ARGUMENT',
  },
  {
    name: 'job download --tokenizer',
    args: (f, o) => [
      'job',
      'download',
      'j',
      ...NOWHERE,
      '--identity',
      'creator',
      '--out',
      join(o, 'm.onnx'),
      '--hf-out',
      join(o, 'hf'),
      '--tokenizer',
      f,
    ],
    empty: 'INVALID_DATA',
  },
  {
    name: 'job download --hf-model',
    args: (f, o) => [
      'job',
      'download',
      'j',
      ...NOWHERE,
      '--identity',
      'creator',
      '--out',
      join(o, 'm.onnx'),
      '--hf-out',
      join(o, 'hf'),
      '--hf-checkpoint',
      work,
      '--hf-model',
      f,
    ],
    empty: 'ONNX_MALFORMED',
  },
  { name: 'audit verify --ledger', args: (f) => ['audit', 'verify', '--ledger', f], empty: 'AUDIT_INVALID' },
  { name: 'audit report --ledger', args: (f) => ['audit', 'report', '--ledger', f, '--owner', 'org0'], empty: 'AUDIT_INVALID' },
  {
    name: 'audit reconcile --agent-ledger',
    args: (f) => ['audit', 'reconcile', '--agent-ledger', f, '--coordinator-ledger', ledger],
    empty: 'AUDIT_INVALID',
  },
  {
    name: 'audit publish --ledger',
    args: (f) => ['audit', 'publish', '--ledger', f, '--nats', 'nats://127.0.0.1:1'],
    empty: 'AUDIT_INVALID',
  },
  {
    name: 'dashboard --ledger',
    args: (f) => [
      'dashboard',
      '--coordinator',
      '127.0.0.1:1',
      '--insecure-loopback',
      '--identity',
      'observer',
      '--listen',
      '127.0.0.1:0',
      '--ledger',
      f,
    ],
    empty: 'AUDIT_INVALID',
  },
  {
    name: 'coordinator serve --tls-cert',
    args: (f, o) => [
      'coordinator',
      'serve',
      '--listen',
      '127.0.0.1:0',
      '--state',
      join(o, 's'),
      '--tls-ca',
      f,
      '--tls-cert',
      f,
      '--tls-key',
      f,
    ],
    empty: 'INVALID_ARGUMENT',
  },
  {
    name: 'solver serve --tls-cert',
    args: (f) => [
      'solver',
      'serve',
      '--coordinator',
      '127.0.0.1:1',
      '--nats',
      'nats://127.0.0.1:1',
      '--tls-ca',
      f,
      '--tls-cert',
      f,
      '--tls-key',
      f,
    ],
    empty: 'INVALID_ARGUMENT',
  },
  { name: 'certs issue --dir', args: (f) => ['certs', 'issue', '--dir', f, '--name', 'org9'], empty: 'FILE_NOT_FOUND', directory: true },
];

type Condition = 'missing' | 'wrong kind' | 'unreadable' | 'empty';
const conditions: Condition[] = ['missing', 'wrong kind', 'unreadable', 'empty'];

/** The input for a condition, in a fresh directory of its own (with an output directory beside it). */
function make(input: Input, condition: Condition): { path: string; out: string } {
  const dir = mkdtempSync(join(work, 'case-'));
  chmodSync(dir, 0o777);
  const out = join(dir, 'out');
  mkdirSync(out, { mode: 0o777 });
  chmodSync(out, 0o777);
  const path = join(dir, input.directory === true ? 'input-dir' : 'input-file.x');
  if (condition === 'wrong kind') {
    if (input.directory === true) writeFileSync(path, 'a file, not a directory\n');
    else mkdirSync(path);
  } else if (condition === 'unreadable') {
    if (input.directory === true) mkdirSync(path);
    else writeFileSync(path, 'secret\n');
    chmodSync(path, 0o000);
  } else if (condition === 'empty') {
    if (input.directory === true) mkdirSync(path);
    else writeFileSync(path, '');
  }
  return { path, out };
}

/**
 * Inputs that take a model: a directory there is a Hugging Face checkpoint directory, so one without config.json is
 * FILE_NOT_FOUND naming <dir>/config.json rather than the wrong kind of input.
 */
const MODEL_INPUTS = new Set([
  'inspect <model>',
  'export <model>',
  'merge --model',
  'merge --template',
  'merge --base',
  'eval --model',
  'agent plan --model',
  'agent run --model',
  'job create --template',
]);

const expected = (input: Input, condition: Condition): Code =>
  condition === 'missing' || (condition === 'wrong kind' && MODEL_INPUTS.has(input.name))
    ? 'FILE_NOT_FOUND'
    : condition === 'empty'
      ? input.empty
      : 'FILE_ACCESS';

describe('every file input of every command: a coded error naming it, never INTERNAL', () => {
  for (const input of inputs)
    for (const condition of conditions)
      it.concurrent(
        `${input.name}: ${condition}${condition === 'unreadable' && ROOT ? ' (as uid 65534)' : ''}`,
        { timeout: 120_000 },
        async () => {
          const { path, out } = make(input, condition);
          const result = await run(input.args(path, out), condition === 'unreadable' && ROOT);
          const code = expected(input, condition);
          const line = result.stderr.split('\n').find((l) => l.startsWith('gramfuse: ')) ?? '';
          expect(line, result.stderr).toMatch(new RegExp(`^gramfuse: ${code}: `));
          expect(result.code, result.stderr).toBe(exitCodeByErrorCode[code]);
          expect(line).toContain(path);
        },
      );
});
