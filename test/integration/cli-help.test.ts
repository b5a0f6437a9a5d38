import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { FileLedger } from '../../shared/audit/index.js';
import { generateSigningKeys } from '../../shared/security/index.js';
import { CLI, REPO } from '../helpers/cli.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-help-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** The modules the ESM loader resolved while `gramfuse ARGS` ran (through a resolve hook). */
function loaded(args: string[], name: string): { urls: string[]; status: number | null; stdout: string } {
  const trace = join(work, `${name}.txt`);
  const run = spawnSync(process.execPath, ['--import', join(REPO, 'test/helpers/trace-imports.mjs'), CLI, ...args], {
    env: { ...process.env, GRAMFUSE_TRACE_IMPORTS: trace },
    encoding: 'utf8',
  });
  return {
    urls: readFileSync(trace, 'utf8')
      .split('\n')
      .filter((l) => l !== ''),
    status: run.status,
    stdout: run.stdout,
  };
}

describe('the CLI loads what a command needs, when it runs', () => {
  it.each([
    ['--help', ['--help']],
    ['inspect --help', ['inspect', '--help']],
    ['agent run --help', ['agent', 'run', '--help']],
    ['audit verify --help', ['audit', 'verify', '--help']],
    ['audit report --help', ['audit', 'report', '--help']],
    ['certs issue --help', ['certs', 'issue', '--help']],
    ['job status --help', ['job', 'status', '--help']],
  ])('gramfuse %s loads neither onnxruntime-node nor NATS', (name, args) => {
    const { urls, status, stdout } = loaded(args, name.replace(/\W+/g, '-'));
    expect(status).toBe(0);
    expect(stdout).toMatch(/Usage: gramfuse/);
    expect(urls.some((u) => u.includes('/cli/main.js'))).toBe(true); // the trace works
    expect(urls.filter((u) => /onnxruntime|@nats-io/.test(u))).toEqual([]);
  });

  it('--help shows the defaults the zod flags declare, as written', () => {
    const { stdout } = loaded(['coordinator', 'serve', '--help'], 'coordinator-serve-help');
    for (const shown of ['(default: "16")', '(default: "in-process")', '(default: "1e-6")', '(default: "3600")'])
      expect(stdout.replace(/\s+/g, ' ')).toContain(shown); // help wraps long lines
  });

  it('gramfuse audit verify --ledger on a real ledger runs and loads neither onnxruntime-node nor NATS', async () => {
    const path = join(work, 'audit.jsonl');
    const ledger = await FileLedger.open(path, generateSigningKeys(), 'writer');
    await ledger.append('job.created', 'job-1', { note: 'a real record' });
    const { urls, status, stdout } = loaded(['audit', 'verify', '--ledger', path], 'audit-verify');
    expect(status).toBe(0);
    expect(stdout).toMatch(/2 records from writer; chain and signatures verify/);
    expect(urls.some((u) => u.includes('/cli/audit-commands.js'))).toBe(true); // the trace sees the command's code
    expect(urls.filter((u) => /onnxruntime|@nats-io/.test(u))).toEqual([]);
  });

  it('a command that runs does load them (the trace can see them)', () => {
    const { urls } = loaded(['inspect', join(REPO, 'examples/label-skew-v1/org0/model.onnx'), '--json'], 'inspect');
    expect(urls.some((u) => u.includes('onnxruntime'))).toBe(true);
  });
});
