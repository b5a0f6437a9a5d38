// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { collectExamples, loadTokenizer, predictLogits } from '../../agent/index.js';
import { exitCodeByErrorCode } from '../../shared/index.js';
import { indexGraph, loadModel, modelInputs, readParameterValues } from '../../shared/onnx/index.js';
import { runCli } from '../helpers/cli.js';
import { fixture, fixtureModel, TOKENIZER } from '../helpers/fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-merge-cli-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const data = fixture('scenarios', 'label-skew', 'org0.jsonl');
const t5 = [fixtureModel('tiny', 't5-a'), fixtureModel('tiny', 't5-b')];

function freshDir(name: string): string {
  const dir = join(work, name);
  mkdirSync(dir);
  return dir;
}

describe('gramfuse merge: outputs', () => {
  it('writes the merged model, safetensors and a report; the model loads and carries merged values', async () => {
    const dir = freshDir('ok');
    const out = join(dir, 'merged.onnx');
    const result = await runCli([
      'merge',
      '--model',
      t5[0]!,
      '--data',
      data,
      '--model',
      t5[1]!,
      '--data',
      data,
      '--tokenizer',
      TOKENIZER,
      '--max-examples',
      '40',
      '--out',
      out,
      '--json',
    ]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['merged.onnx', 'merged.report.json', 'merged.safetensors']);
    const summary = JSON.parse(result.stdout);
    expect(summary.spec).toMatchObject({ method: 'regmean', alpha: 0.9, weighting: 'equal', includePadding: false });
    expect(summary.owners.map((o: { name: string; examples: number }) => [o.name, o.examples])).toEqual([
      ['t5-a', 40],
      ['t5-b', 40],
    ]);
    expect(summary.layers).toHaveLength(9);
    expect(JSON.parse(readFileSync(join(dir, 'merged.report.json'), 'utf8'))).toEqual(summary);

    // safetensors: 8-byte header length, JSON header, tensors matching the merged model.
    const st = readFileSync(join(dir, 'merged.safetensors'));
    const headerLength = Number(st.readBigUInt64LE(0));
    const header = JSON.parse(st.subarray(8, 8 + headerLength).toString('utf8'));
    const merged = await loadModel(out);
    const entry = header['m.classifier.weight'];
    expect(entry).toMatchObject({ dtype: 'F32', shape: [14, 64] });
    const fromSt = new Float32Array(
      new Uint8Array(st.subarray(8 + headerLength + entry.data_offsets[0], 8 + headerLength + entry.data_offsets[1])).buffer,
    );
    expect(Array.from(fromSt)).toEqual(Array.from(Float32Array.from(readParameterValues(merged, 'm.classifier.weight'))));
    // The merged value is neither model's: it differs from each of them (RegMean's solution is not an
    // elementwise interpolation, so "between" would not be a true claim).
    for (const model of t5) {
      const values = readParameterValues(await loadModel(model), 'm.classifier.weight');
      expect(
        Array.from(fromSt).some((v, i) => Math.abs(v - values[i]!) > 1e-6),
        model,
      ).toBe(true);
    }
  });

  it('average needs no data; the human summary names the outputs', async () => {
    const dir = freshDir('average');
    const result = await runCli(['merge', '--method', 'average', '--model', t5[0]!, '--model', t5[1]!, '--out', join(dir, 'avg.onnx')]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/method average/);
    expect(result.stdout).toMatch(/merged model .*avg\.onnx/);
  });
});

describe('gramfuse merge / eval: bad input is a coded error and writes nothing', () => {
  const cases: [string, () => string[], string, RegExp][] = [
    [
      'models whose fingerprints differ',
      () => [
        'merge',
        '--model',
        t5[0]!,
        '--data',
        data,
        '--model',
        fixtureModel('tiny', 'gpt2-a'),
        '--data',
        data,
        '--tokenizer',
        TOKENIZER,
      ],
      'FINGERPRINT_MISMATCH',
      /--model .*gpt2-a.*: fingerprint sha256:\w+ differs from .*t5-a.*'s sha256:\w+; RegMean merges models fine-tuned from one base/,
    ],
    [
      '--data count not matching --model count',
      () => ['merge', '--model', t5[0]!, '--data', data, '--model', t5[1]!, '--tokenizer', TOKENIZER],
      'INVALID_ARGUMENT',
      /--data: 1 data files for 2 models/,
    ],
    [
      'an empty data file',
      () => {
        writeFileSync(join(work, 'empty.jsonl'), '\n\n');
        return ['merge', '--model', t5[0]!, '--data', join(work, 'empty.jsonl'), '--tokenizer', TOKENIZER];
      },
      'INVALID_DATA',
      /empty\.jsonl: no usable examples/,
    ],
    [
      'task-arithmetic without --base',
      () => ['merge', '--method', 'task-arithmetic', '--model', t5[0]!, '--model', t5[1]!],
      'INVALID_ARGUMENT',
      /--base: task-arithmetic needs the base model/,
    ],
    [
      'ties without --base',
      () => ['merge', '--method', 'ties', '--model', t5[0]!, '--model', t5[1]!],
      'INVALID_ARGUMENT',
      /--base: ties needs the base model/,
    ],
    [
      'alpha outside [0, 1]',
      () => ['merge', '--model', t5[0]!, '--data', data, '--tokenizer', TOKENIZER, '--alpha', '1.5'],
      'INVALID_ARGUMENT',
      /--alpha: must be between 0 and 1 \(got "1\.5"\)/,
    ],
    [
      'an output path in a missing directory',
      () => ['merge', '--model', t5[0]!, '--data', data, '--tokenizer', TOKENIZER, '--out-dir-missing'],
      'FILE_NOT_FOUND',
      /no-such-dir: no such file or directory .*create the directory first/,
    ],
  ];

  it.each(cases)('%s', async (_name, makeArgs, code, message) => {
    const dir = freshDir(`bad-${code}-${Math.random().toString(36).slice(2, 8)}`);
    let args = makeArgs();
    args = args.includes('--out-dir-missing')
      ? [...args.filter((a) => a !== '--out-dir-missing'), '--out', join(dir, 'no-such-dir', 'm.onnx')]
      : [...args, '--out', join(dir, 'merged.onnx')];
    const result = await runCli(args);
    expect(result.code).toBe(exitCodeByErrorCode[code as keyof typeof exitCodeByErrorCode]);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^gramfuse: ${code}: `));
    expect(lines[0]).toMatch(message);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a label not in the label list (eval): file, line and label named', async () => {
    const path = join(work, 'odd-label.jsonl');
    writeFileSync(
      path,
      `${JSON.stringify({ text: 'a debian package', label: 'libs' })}\n${JSON.stringify({ text: 'another one', label: 'kernel-modules' })}\n`,
    );
    const result = await runCli(['eval', '--model', t5[0]!, '--data', path, '--tokenizer', TOKENIZER, '--json']);
    expect(result.code).toBe(exitCodeByErrorCode.INVALID_DATA);
    expect(result.stderr).toMatch(
      /^gramfuse: INVALID_DATA: .*odd-label\.jsonl:2: label "kernel-modules" is not in the label list \(libs, libdevel/,
    );
  });

  it('a malformed data line names file and line', async () => {
    const path = join(work, 'broken.jsonl');
    writeFileSync(path, `${JSON.stringify({ text: 'fine', label: 'libs' })}\n{"text": "cut off\n`);
    const result = await runCli(['eval', '--model', t5[0]!, '--data', path, '--tokenizer', TOKENIZER]);
    expect(result.code).toBe(exitCodeByErrorCode.INVALID_DATA);
    expect(result.stderr).toMatch(/broken\.jsonl:2: not valid JSON/);
  });

  it('eval reports accuracy and macro-F1, and an ensemble averages logits', async () => {
    const test = fixture('data', 'test', 'en.jsonl');
    const single = await runCli(['eval', '--model', t5[0]!, '--data', test, '--tokenizer', TOKENIZER, '--max-examples', '200', '--json']);
    const ensemble = await runCli([
      'eval',
      '--ensemble',
      '--model',
      t5[0]!,
      '--model',
      t5[1]!,
      '--data',
      test,
      '--tokenizer',
      TOKENIZER,
      '--max-examples',
      '200',
      '--json',
    ]);
    expect(single.code).toBe(0);
    expect(ensemble.code).toBe(0);
    const a = JSON.parse(single.stdout) as { examples: number; accuracy: number };
    const e = JSON.parse(ensemble.stdout) as { examples: number; accuracy: number };
    expect(a.examples).toBe(200);
    expect(e.examples).toBe(200);
    // Independently: each model's logits on the same seeded subset, averaged here, argmax against the labels.
    const labels = JSON.parse(readFileSync(fixture('data', 'labels.json'), 'utf8')) as string[];
    const tokenizer = await loadTokenizer(TOKENIZER, { maxLength: 128 });
    const examples = await collectExamples(test, { requireLabel: true, maxExamples: 200, seed: 1 });
    const truth = examples.map((x) => labels.indexOf(x.label!));
    const logits: { logits: Float64Array }[] = [];
    for (const path of t5) {
      const model = await loadModel(path);
      logits.push(await predictLogits([{ model, analysis: { inputs: modelInputs(indexGraph(model.proto.graph!)) } }], tokenizer, examples));
    }
    const accuracyOf = (score: (i: number, c: number) => number): number =>
      truth.filter((label, i) => {
        let best = 0;
        for (let c = 1; c < labels.length; c++) if (score(i, c) > score(i, best)) best = c;
        return best === label;
      }).length / truth.length;
    const k = labels.length;
    expect(Math.abs(a.accuracy - accuracyOf((i, c) => logits[0]!.logits[i * k + c]!))).toBeLessThan(1e-12);
    expect(Math.abs(e.accuracy - accuracyOf((i, c) => (logits[0]!.logits[i * k + c]! + logits[1]!.logits[i * k + c]!) / 2))).toBeLessThan(
      1e-12,
    );
    const twoWithoutFlag = await runCli(['eval', '--model', t5[0]!, '--model', t5[1]!, '--data', test, '--tokenizer', TOKENIZER]);
    expect(twoWithoutFlag.stderr).toMatch(/INVALID_ARGUMENT: --model given 2 times; add --ensemble/);
  });
});
