import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { collectInWorker } from '../../agent/index.js';
import { exitCodeByErrorCode } from '../../shared/index.js';
import { DisclosurePolicy, MergeSpec, parseSafetensors, planDisclosure } from '../../shared/merge/index.js';
import { analyzeModel, cudaProviderLibraries, loadModel, readParameterValues } from '../../shared/onnx/index.js';
import { runCli } from '../helpers/cli.js';
import { EXAMPLE_DATA, exampleModel, EXAMPLE_TOKENIZER } from '../helpers/examples.js';
import { maxAbsDiff } from '../helpers/fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-agent-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const owners = ['org0', 'org1'].map((org) => ({
  model: exampleModel(org),
  data: EXAMPLE_DATA(org),
}));
const subset = ['--max-examples', '300'];
/** Whether onnxruntime-node's CUDA provider libraries are on this host (they never are on CI's machines). */
const CUDA_INSTALLED = cudaProviderLibraries().missing.length === 0;

async function collect(index: number, extra: string[] = []): Promise<{ out: string; code: number; stdout: string; stderr: string }> {
  const out = join(work, `bundle-${index}-${Math.random().toString(36).slice(2, 8)}`);
  const o = owners[index]!;
  const result = await runCli([
    'agent',
    'collect',
    '--model',
    o.model,
    '--data',
    o.data,
    '--tokenizer',
    EXAMPLE_TOKENIZER,
    '--out',
    out,
    ...subset,
    ...extra,
  ]);
  return { out, ...result };
}

describe('agent bundles', () => {
  it('a merge from bundles equals the in-process merge (max |Δ| ≤ 1e-6); plan totals equal the bundle bytes', async () => {
    const bundles = [await collect(0, ['--json']), await collect(1)];
    for (const b of bundles) expect(b.code, b.stderr).toBe(0);
    const summary = JSON.parse(bundles[0]!.stdout);
    expect(summary.examples).toBe(300);
    expect(summary.device.device).toBe('cpu');

    // The plan's byte total is exactly the tensor bytes in statistics.safetensors.
    const file = readFileSync(join(bundles[0]!.out, 'statistics.safetensors'));
    const { tensors } = parseSafetensors(file, (reason) => new Error(reason));
    const manifest = JSON.parse(readFileSync(join(bundles[0]!.out, 'manifest.json'), 'utf8'));
    expect([...tensors.values()].reduce((s, t) => s + t.bytes.byteLength, 0)).toBe(manifest.plan.totals.bytes);
    expect(manifest.plan.statistics.find((s: { id: string }) => s.id === 'gram/g0').rows).toBeGreaterThan(256);

    const fromBundles = join(work, 'from-bundles.onnx');
    const inProcess = join(work, 'in-process.onnx');
    const a = await runCli([
      'merge',
      '--template',
      owners[0]!.model,
      '--bundle',
      bundles[0]!.out,
      '--bundle',
      bundles[1]!.out,
      '--out',
      fromBundles,
      '--json',
    ]);
    const b = await runCli([
      'merge',
      ...owners.flatMap((o) => ['--model', o.model, '--data', o.data]),
      ...subset,
      '--tokenizer',
      EXAMPLE_TOKENIZER,
      '--out',
      inProcess,
      '--json',
    ]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    const ma = await loadModel(fromBundles);
    const mb = await loadModel(inProcess);
    for (const tensor of mb.proto.graph!.initializer.filter((t) => t.dataType === 1)) {
      expect(maxAbsDiff(readParameterValues(ma, tensor.name!), readParameterValues(mb, tensor.name!))).toBeLessThanOrEqual(1e-6);
    }
  });

  it('a memory budget that splits the Gram groups into passes gives the same bundle bytes; one too small for a group is refused', async () => {
    // The example model's groups: three of n = 128 (0.19 MiB of accumulators each) and one of n = 512 (3 MiB) per block.
    const one = await collect(0, ['--json', '--memory-budget', '1GB']);
    const split = await collect(0, ['--json', '--memory-budget', '4MB']);
    for (const b of [one, split]) expect(b.code, b.stderr).toBe(0);
    const [a, b] = [JSON.parse(one.stdout), JSON.parse(split.stdout)];
    expect(a.passes).toBe(1);
    expect(b.passes).toBeGreaterThan(1);
    expect(b.memoryBudgetBytes).toBe(4_000_000);
    expect(b.peakRssBytes).toBeGreaterThan(0);
    expect(b.memoryTargetBytes).toBeGreaterThan(b.modelBytes);
    const bytes = (dir: string): Buffer => readFileSync(join(dir, 'statistics.safetensors'));
    expect(bytes(split.out).equals(bytes(one.out))).toBe(true);
    expect(b.examples).toBe(300);

    const refused = await collect(0, ['--memory-budget', '1MB']);
    expect(refused.code).toBe(exitCodeByErrorCode.RESOURCE_EXHAUSTED);
    expect(refused.stderr).toMatch(/RESOURCE_EXHAUSTED: Gram group \S+ .*raise --memory-budget/);
    expect(existsSync(refused.out)).toBe(false);
    const leftovers = readdirSync(work).filter((name) => name.startsWith(`${basename(refused.out)}.tmp-`));
    expect(leftovers).toEqual([]);
  });

  it('a bundle with one tensor byte changed is rejected, naming the statistic', async () => {
    const bundle = await collect(0);
    expect(bundle.code, bundle.stderr).toBe(0);
    const path = join(bundle.out, 'statistics.safetensors');
    const bytes = readFileSync(path);
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0x01;
    writeFileSync(path, bytes);
    const result = await runCli(['merge', '--template', owners[0]!.model, '--bundle', bundle.out, '--out', join(work, 'tampered.onnx')]);
    expect(result.code).toBe(exitCodeByErrorCode.BUNDLE_INVALID);
    expect(result.stderr).toMatch(
      /^gramfuse: BUNDLE_INVALID: bundle .*: statistic count\/weight fails its SHA-256 check|^gramfuse: BUNDLE_INVALID: bundle .*: statistic \S+ fails its SHA-256 check/,
    );
    expect(existsSync(join(work, 'tampered.onnx'))).toBe(false);
  });

  it('agent plan lists every statistic before anything is computed; --json is one object', async () => {
    const o = owners[0]!;
    const result = await runCli(['agent', 'plan', '--model', o.model, '--data', o.data, '--tokenizer', EXAMPLE_TOKENIZER, '--json']);
    expect(result.code).toBe(0);
    const plan = JSON.parse(result.stdout);
    expect(plan.statistics.filter((s: { kind: string }) => s.kind === 'gram')).toHaveLength(10);
    expect(plan.statistics.filter((s: { kind: string }) => s.kind === 'gram_times_weight')).toHaveLength(14);
    expect(plan.statistics.every((s: { rows?: number }) => s.rows === undefined)).toBe(true);
    expect(plan.totals.bytes).toBe(plan.statistics.reduce((sum: number, s: { bytes: number }) => sum + s.bytes, 0));
    expect(plan.examples).toBe(1672);
  });
});

describe('agent: bad input is a coded error and nothing is written', () => {
  const bad = (name: string, content: string): string => {
    const path = join(work, name);
    writeFileSync(path, content);
    return path;
  };
  const o = owners[0]!;
  const cases: [string, () => string[], keyof typeof exitCodeByErrorCode, RegExp][] = [
    [
      'a missing tokenizer.json',
      () => ['--model', o.model, '--data', o.data, '--tokenizer', join(work, 'none.json')],
      'FILE_NOT_FOUND',
      /none\.json: no such file/,
    ],
    [
      'a malformed tokenizer.json',
      () => ['--model', o.model, '--data', o.data, '--tokenizer', bad('tok.json', '{"model": ')],
      'INVALID_ARGUMENT',
      /tok\.json: not valid JSON/,
    ],
    [
      'a data file with a malformed line',
      () => [
        '--model',
        o.model,
        '--data',
        bad('bad.jsonl', '{"text": "ok", "label": "libs"}\n{"text": "cut\n'),
        '--tokenizer',
        EXAMPLE_TOKENIZER,
      ],
      'INVALID_DATA',
      /bad\.jsonl:2: not valid JSON/,
    ],
    [
      'a text field missing',
      () => ['--model', o.model, '--data', bad('nofield.jsonl', '{"body": "x", "label": "libs"}\n'), '--tokenizer', EXAMPLE_TOKENIZER],
      'INVALID_DATA',
      /nofield\.jsonl:1: field "text" is missing \(fields: body, label\); use --text-field/,
    ],
    [
      'zero usable examples',
      () => ['--model', o.model, '--data', bad('blank.jsonl', '\n \n'), '--tokenizer', EXAMPLE_TOKENIZER],
      'INVALID_DATA',
      /blank\.jsonl: no usable examples/,
    ],
    [
      "a model whose fingerprint differs from the job's",
      () => ['--model', o.model, '--data', o.data, '--tokenizer', EXAMPLE_TOKENIZER, '--expect-fingerprint', `sha256:${'0'.repeat(64)}`],
      'FINGERPRINT_MISMATCH',
      /org0\/model\.onnx: fingerprint sha256:\w+ is not the job's sha256:0{64}/,
    ],
    [
      'fewer rows than the policy minimum',
      () => ['--model', o.model, '--data', o.data, '--tokenizer', EXAMPLE_TOKENIZER, '--max-examples', '50'],
      'POLICY_VIOLATION',
      /policy: 2 Gram statistics come from fewer than 256 rows \(gram\/g8: 50 rows, gram\/g9: 50 rows\)/,
    ],
    [
      'a layer outside the allow-list',
      () => ['--model', o.model, '--data', o.data, '--tokenizer', EXAMPLE_TOKENIZER, '--allow-layers', 'm.classifier.weight'],
      'POLICY_VIOLATION',
      /policy: \d+ statistics concern layers outside the allow-list/,
    ],
    // Only where this host cannot run CUDA (every CI machine): on a GPU host --device cuda succeeds.
    ...(CUDA_INSTALLED
      ? []
      : [
          [
            '--device cuda on a machine without CUDA',
            () => ['--model', o.model, '--data', o.data, '--tokenizer', EXAMPLE_TOKENIZER, '--device', 'cuda', '--max-examples', '300'],
            'DEVICE_UNAVAILABLE',
            /--device cuda: the CUDA provider is not installed .*; or use --device cpu/,
          ] as (typeof cases)[number],
        ]),
  ];
  it.each(cases)('%s', async (_name, args, code, message) => {
    const out = join(work, `never-${code}-${Math.random().toString(36).slice(2, 8)}`);
    const result = await runCli(['agent', 'collect', ...args(), '--out', out]);
    expect(result.code).toBe(exitCodeByErrorCode[code]);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^gramfuse: ${code}: `));
    expect(lines[0]).toMatch(message);
    expect(existsSync(out)).toBe(false);
  });

  it('--device auto falls back to the CPU and says why', async () => {
    const bundle = await collect(0, ['--device', 'auto']);
    expect(bundle.code, bundle.stderr).toBe(0);
    // Whatever this host has: CUDA when its provider is installed and works, else the CPU with the reason.
    expect(bundle.stdout).toMatch(CUDA_INSTALLED ? /device: using (CUDA|CPU: )/ : /device: using CPU: the CUDA provider is not installed/);
  });
});

describe('inference off the event loop', () => {
  it('the main thread keeps ticking while the worker collects', async () => {
    const analysis = await analyzeModel(await loadModel(owners[0]!.model));
    const plan = planDisclosure('org0', analysis, MergeSpec.parse({}), 'float32', DisclosurePolicy.parse({}));
    let maxGap = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 10);
    const started = performance.now();
    const result = await collectInWorker({
      owner: 'org0',
      analysis,
      plan,
      statisticsPath: join(work, 'ticking.safetensors'),
      modelPath: owners[0]!.model,
      dataPath: owners[0]!.data,
      tokenizerPath: EXAMPLE_TOKENIZER,
      spec: MergeSpec.parse({}),
      maxLength: 128,
      batchSize: 32,
      maxExamples: 400,
      seed: 1,
      textField: 'text',
      device: 'cpu',
    });
    clearInterval(timer);
    expect(result.statistics.examples).toBe(400);
    expect(performance.now() - started).toBeGreaterThan(500);
    // A blocked event loop would show a gap as long as a whole batch run (hundreds of ms).
    expect(maxGap).toBeLessThan(250);
  });
});
