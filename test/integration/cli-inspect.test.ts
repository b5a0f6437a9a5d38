// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { exitCodeByErrorCode } from '../../shared/index.js';
import { runCli } from '../helpers/cli.js';
import { fixtureModel } from '../helpers/fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-cli-inspect-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('gramfuse inspect', () => {
  it('--json prints exactly one JSON object with the documented fields', async () => {
    const result = await runCli(['inspect', fixtureModel('label-skew', 'org2'), '--json']);
    expect(result.code).toBe(0);
    expect(result.stderr).toBe('');
    const lines = result.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const report = JSON.parse(lines[0]!);
    expect(Object.keys(report)).toEqual(expect.arrayContaining(['fingerprint', 'parameters', 'linearLayers', 'gramGroups', 'statistics']));
    expect(report.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(report.linearLayers[0]).toEqual({
      weight: expect.any(String),
      input: expect.any(String),
      inDim: 128,
      outDim: 128,
      orientation: 'in_out',
      bias: expect.any(String),
    });
    expect(report.gramGroups[0].inputs[0]).toMatchObject({ rows: 'tokens' });
  });

  it('prints human tables by default', async () => {
    const result = await runCli(['inspect', fixtureModel('tiny', 't5-a')]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^fingerprint  sha256:/m);
    expect(result.stdout).toMatch(/Linear layers \(13\)/);
    expect(result.stdout).toMatch(/Gram groups \(9\)/);
    expect(result.stdout).toMatch(/all rows/);
  });

  it.each([
    ['a missing file', () => join(work, 'missing.onnx'), 'FILE_NOT_FOUND', /missing\.onnx: no such file/],
    [
      'a file that is not ONNX',
      () => {
        const path = join(work, 'notes.onnx');
        writeFileSync(path, 'hello, this is not a model');
        return path;
      },
      'ONNX_MALFORMED',
      /not a valid ONNX model/,
    ],
  ] as const)('%s: one coded line, its exit code, nothing written', async (_name, makePath, code, message) => {
    const before = readdirSync(work).length;
    const result = await runCli(['inspect', makePath(), '--json']);
    expect(result.code).toBe(exitCodeByErrorCode[code]);
    expect(result.stdout).toBe('');
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^gramfuse: ${code}: `));
    expect(lines[0]).toMatch(message);
    expect(readdirSync(work).length).toBe(before + (code === 'ONNX_MALFORMED' ? 1 : 0));
  });

  it('an unknown flag is an argument error', async () => {
    const result = await runCli(['inspect', '--frobnicate', 'x.onnx']);
    expect(result.code).toBe(exitCodeByErrorCode.INVALID_ARGUMENT);
    expect(result.stderr).toMatch(/unknown option '--frobnicate'/);
  });
});
