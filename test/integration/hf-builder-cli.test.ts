// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
// Hugging Face directories wherever a model is taken (issue 39 items 2 and 4), through the real CLI: `merge` of two HF
// directories equals the same merge of their transformers ONNX exports (every merged tensor within 1e-5 relative) and
// writes an HF directory back (config.json, tokenizer files, tensors in the input dtype, BF16 included); ONNX input with
// --hf-out and no --hf-checkpoint is refused before merging; `export --onnx-out` writes the built model (its logits
// are the export's: `eval` agrees); `inspect`, `agent plan` and `agent collect` take the directory, the tokenizer
// defaulting to DIR/tokenizer.json, and report the built graph's fingerprint.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { decodeFloats } from '../../shared/index.js';
import { buildHfModel, locateCheckpointTensors } from '../../shared/hf/index.js';
import { analyzeModel, loadModel } from '../../shared/onnx/index.js';
import { runCli } from '../helpers/cli.js';
import { fixture } from '../helpers/fixtures.js';
import { type TestTensor, writeHfDirectory } from '../helpers/hf-directory.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-hf-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const hf = (name: string): string => fixture('hf', 'tiny', name);
const data = (org: string): string => fixture('scenarios', 'label-skew', `${org}.jsonl`);
const SMALL = ['--max-examples', '64', '--max-length', '64'];

/** Every tensor of a checkpoint directory as float64, with its dtype. */
async function tensorsOf(dir: string): Promise<Map<string, { dtype: string; shape: readonly number[]; values: Float64Array }>> {
  const out = new Map<string, { dtype: string; shape: readonly number[]; values: Float64Array }>();
  for (const [name, t] of await locateCheckpointTensors(dir)) {
    const bytes = new Uint8Array(readFileSync(join(dir, t.file)).subarray(t.begin, t.end));
    const dtype = t.dtype === 'F32' ? 'float32' : t.dtype === 'BF16' ? 'bfloat16' : 'float16';
    out.set(name, { dtype: t.dtype, shape: t.shape, values: decodeFloats(bytes, dtype) });
  }
  return out;
}

/** The largest |a − b| over the largest |b|, per tensor; the worst over all (same names required). */
function worstRelative(a: Awaited<ReturnType<typeof tensorsOf>>, b: Awaited<ReturnType<typeof tensorsOf>>): number {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  let worst = 0;
  for (const [name, x] of a) {
    const y = b.get(name)!.values;
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < y.length; i++) {
      diff = Math.max(diff, Math.abs(x.values[i]! - y[i]!));
      scale = Math.max(scale, Math.abs(y[i]!));
    }
    worst = Math.max(worst, diff / scale);
  }
  return worst;
}

async function merge(models: [string, string], out: string, extra: string[]): Promise<void> {
  mkdirSync(join(work, out), { recursive: true });
  const r = await runCli([
    'merge',
    '--model',
    models[0],
    '--data',
    data('org0'),
    '--model',
    models[1],
    '--data',
    data('org1'),
    ...SMALL,
    '--out',
    join(work, out, 'merged.onnx'),
    ...extra,
  ]);
  expect(r.code, r.stderr).toBe(0);
}

describe('HF directories through the CLI', () => {
  it('merge of hf/tiny/llama-{a,b} equals the merge of their ONNX exports; --hf-out writes the input dtype, config and tokenizer', async () => {
    await merge([hf('llama-a'), hf('llama-b')], 'from-hf', ['--hf-out', join(work, 'from-hf-out')]);
    await merge([fixture('models', 'tiny', 'llama-a', 'model.onnx'), fixture('models', 'tiny', 'llama-b', 'model.onnx')], 'from-onnx', [
      '--tokenizer',
      join(hf('llama-a'), 'tokenizer.json'),
      '--hf-out',
      join(work, 'from-onnx-out'),
      '--hf-checkpoint',
      hf('llama-a'),
    ]);
    const fromHf = await tensorsOf(join(work, 'from-hf-out'));
    const fromOnnx = await tensorsOf(join(work, 'from-onnx-out'));
    expect(worstRelative(fromHf, fromOnnx)).toBeLessThanOrEqual(1e-5);
    // The merge changed the weights (it is not a copy of either input).
    expect(worstRelative(fromHf, await tensorsOf(hf('llama-a')))).toBeGreaterThan(1e-3);
    const input = await tensorsOf(hf('llama-a'));
    for (const [name, t] of fromHf)
      expect(`${t.dtype}[${t.shape.join(',')}]`, name).toBe(`${input.get(name)!.dtype}[${input.get(name)!.shape.join(',')}]`);
    for (const file of ['config.json', 'tokenizer.json', 'tokenizer_config.json'])
      expect(readFileSync(join(work, 'from-hf-out', file), 'utf8'), file).toBe(readFileSync(join(hf('llama-a'), file), 'utf8'));
    // The fingerprint is the built graph's (what `inspect` of the directory reports), not the export's.
    const report = JSON.parse(readFileSync(join(work, 'from-hf', 'merged.report.json'), 'utf8')) as { fingerprint: string };
    const built = await analyzeModel((await buildHfModel(hf('llama-a'))).model, { probe: false });
    expect(report.fingerprint).toBe(built.fingerprint);
    const inspect = await runCli(['inspect', hf('llama-a'), '--json']);
    expect(inspect.code, inspect.stderr).toBe(0);
    expect((JSON.parse(inspect.stdout) as { fingerprint: string }).fingerprint).toBe(built.fingerprint);
  });

  it('BF16 directories merge into a BF16 directory', async () => {
    for (const name of ['llama-a', 'llama-b']) {
      const dir = join(work, `bf16-${name}`);
      const tensors: TestTensor[] = [...(await tensorsOf(hf(name)))].map(([n, t]) => ({ name: n, shape: t.shape, values: t.values }));
      const config = JSON.parse(readFileSync(join(hf(name), 'config.json'), 'utf8')) as Record<string, unknown>;
      writeHfDirectory(dir, { ...config, torch_dtype: 'bfloat16' }, tensors, { dtype: 'BF16' });
      for (const file of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(hf(name), file), join(dir, file));
    }
    await merge([join(work, 'bf16-llama-a'), join(work, 'bf16-llama-b')], 'from-bf16', ['--hf-out', join(work, 'from-bf16-out')]);
    const out = await tensorsOf(join(work, 'from-bf16-out'));
    expect(out.size).toBe(21);
    expect([...out.values()].every((t) => t.dtype === 'BF16')).toBe(true);
    // Within bfloat16's precision of the float32 merge (8 bits of mantissa, and inputs rounded to it).
    expect(worstRelative(out, await tensorsOf(join(work, 'from-hf-out')))).toBeLessThan(0.05);
  });

  it('merge --hf-out from ONNX models without --hf-checkpoint is refused before merging, naming --hf-checkpoint', async () => {
    const out = join(work, 'refused', 'merged.onnx');
    mkdirSync(join(work, 'refused'));
    const r = await runCli([
      'merge',
      ...['llama-a', 'llama-b'].flatMap((m, i) => ['--model', fixture('models', 'tiny', m, 'model.onnx'), '--data', data(`org${i}`)]),
      '--tokenizer',
      join(hf('llama-a'), 'tokenizer.json'),
      ...SMALL,
      '--out',
      out,
      '--hf-out',
      join(work, 'refused-hf'),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/INVALID_ARGUMENT: --hf-out .*--hf-checkpoint/);
    expect(existsSync(out)).toBe(false);
    expect(existsSync(join(work, 'refused-hf', 'model.safetensors'))).toBe(false);
  });

  it('export --onnx-out writes the built model; eval of it, of the directory and of the export agree', async () => {
    const onnx = join(work, 'qwen2-a.onnx');
    const r = await runCli(['export', hf('qwen2-a'), '--onnx-out', onnx]);
    expect(r.code, r.stderr).toBe(0);
    const exported = await loadModel(onnx);
    expect(exported.proto.graph!.initializer.length).toBe((await buildHfModel(hf('qwen2-a'))).model.proto.graph!.initializer.length);
    const evalOf = async (model: string, extra: string[] = []) => {
      const e = await runCli(['eval', '--model', model, '--data', data('org0'), '--max-examples', '96', '--json', ...extra]);
      expect(e.code, e.stderr).toBe(0);
      const { accuracy, macroF1, examples } = JSON.parse(e.stdout) as { accuracy: number; macroF1: number; examples: number };
      return { accuracy, macroF1, examples };
    };
    const tokenizer = ['--tokenizer', join(hf('qwen2-a'), 'tokenizer.json')];
    const dir = await evalOf(hf('qwen2-a')); // tokenizer and labels from the directory
    const file = await evalOf(onnx, tokenizer);
    const reference = await evalOf(fixture('models', 'tiny', 'qwen2-a', 'model.onnx'), tokenizer);
    expect(dir).toEqual(reference);
    expect(file).toEqual(reference);
  });

  it('agent plan and agent collect take a directory (tokenizer from it) and plan the built graph', async () => {
    const plan = await runCli(['agent', 'plan', '--model', hf('qwen2-b'), '--data', data('org1'), '--max-examples', '300', '--json']);
    expect(plan.code, plan.stderr).toBe(0);
    const parsed = JSON.parse(plan.stdout) as { owner: string; fingerprint: string; statistics: { id: string }[] };
    expect(parsed.owner).toBe('qwen2-b');
    expect(parsed.fingerprint).toBe((await analyzeModel((await buildHfModel(hf('qwen2-b'))).model, { probe: false })).fingerprint);
    expect(parsed.statistics.filter((s) => s.id.startsWith('gram/')).length).toBe(9);
    const out = join(work, 'bundle');
    const collect = await runCli([
      'agent',
      'collect',
      '--model',
      hf('qwen2-b'),
      '--data',
      data('org1'),
      '--max-examples',
      '300',
      '--out',
      out,
    ]);
    expect(collect.code, collect.stderr).toBe(0);
    expect(existsSync(join(out, 'manifest.json'))).toBe(true);
    // No directory to take a tokenizer from: a coded error naming the flag; a directory without config.json is named.
    const noTokenizer = await runCli([
      'agent',
      'plan',
      '--model',
      fixture('models', 'tiny', 'qwen2-b', 'model.onnx'),
      '--data',
      data('org1'),
    ]);
    expect(noTokenizer.code).toBe(2);
    expect(noTokenizer.stderr).toMatch(/INVALID_ARGUMENT: --tokenizer: name a tokenizer\.json/);
    const notHf = await runCli(['inspect', work]);
    expect(notHf.code).toBe(3);
    expect(notHf.stderr).toMatch(/FILE_NOT_FOUND: .*config\.json: no such file/);
  });
});
