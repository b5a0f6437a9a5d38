// float16 decoders (issue #15): two synthetic fp16 Llama/Qwen2 models (bench/synthetic-decoder.ts, computing in
// float16 throughout like an fp16 export) merged by RegMean. The parameters are read as float16, merged in float64
// and written back as float16 (ONNX and safetensors); the merged model runs; every solved layer is the float64
// RegMean of the activations the fp16 models produce (test/helpers/regmean-reference.ts), rounded to float16.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { DECODER_PRESETS, writeSyntheticDecoder } from '../../bench/synthetic-decoder.js';
import { parseSafetensors } from '../../shared/merge/index.js';
import { createSession, loadModel, OrtTensor, runSession } from '../../shared/onnx/index.js';
import { runCli } from '../helpers/cli.js';
import { EXAMPLE_DATA, EXAMPLE_TOKENIZER } from '../helpers/examples.js';
import { jsonlRows, relativeFrobenius } from '../helpers/fixtures.js';
import { halfValue, mergedWeights, referenceRegMean } from '../helpers/regmean-reference.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-fp16-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const ALPHA = 0.9;
const MAX_LENGTH = 32;
const ROWS = 40;

describe.each(['tiny-llama', 'tiny-qwen2'] as const)('RegMean on a float16 decoder: %s', (preset) => {
  it('reads float16, merges in float64, writes float16 that runs and matches float64 RegMean rounded', { timeout: 300_000 }, async () => {
    const models = [1, 2].map((seed) => join(work, `${preset}-${seed}.onnx`));
    for (const [i, path] of models.entries())
      await writeSyntheticDecoder(path, { ...DECODER_PRESETS[preset], dtype: 'float16', seed: i + 1 });
    const owners = ['org0', 'org1'].map((org, i) => {
      const path = join(work, `${preset}-${org}.jsonl`);
      const rows = jsonlRows(EXAMPLE_DATA(org), ROWS); // all of them used, so the reference sees the same rows
      writeFileSync(path, rows.map((row) => JSON.stringify(row)).join('\n'));
      return { model: models[i]!, path, rows };
    });

    const out = join(work, `${preset}-merged.onnx`);
    const args = ['merge', '--out', out, '--tokenizer', EXAMPLE_TOKENIZER, '--max-length', String(MAX_LENGTH), '--alpha', String(ALPHA)];
    for (const o of owners) args.push('--model', o.model, '--data', o.path);
    const r = await runCli(args);
    expect(r.code, r.stderr).toBe(0);

    // Written in the template's dtype: every parameter float16 in the model and in merged.safetensors.
    const merged = await loadModel(out);
    const floats = merged.proto.graph!.initializer.filter((t) => t.dataType !== 7);
    expect(new Set(floats.map((t) => t.dataType))).toEqual(new Set([10]));
    const safetensors = parseSafetensors(readFileSync(out.replace(/\.onnx$/, '.safetensors')), (reason) => new Error(reason));
    expect(new Set([...safetensors.tensors.values()].map((t) => t.dtype))).toEqual(new Set(['F16']));

    // It runs: float16 logits, all finite.
    const session = await createSession(merged);
    try {
      const ids = BigInt64Array.from([2n, 17n, 300n, 5n, 9n, 0n]);
      const fed = await runSession(
        session,
        {
          input_ids: new OrtTensor('int64', ids, [2, 3]),
          attention_mask: new OrtTensor('int64', BigInt64Array.from([1n, 1n, 1n, 1n, 1n, 0n]), [2, 3]),
        },
        out,
      );
      const logits = fed.logits!;
      expect(logits.type).toBe('float16');
      expect((logits.data as Uint16Array).every((bits) => Number.isFinite(halfValue(bits)))).toBe(true);
    } finally {
      await session.release();
    }

    // Each solved weight is the float64 solution rounded to float16. Tolerance per layer, relative Frobenius: rounding
    // to float16 moves each value by at most 2^-11 of itself (RMS ≈ 1.6e-4 relative for these weights), and the
    // reference's own graph may give a float16 activation one step off the instrumented graph's (onnxruntime fuses the
    // two graphs' float16 ops differently), ≈ 1e-4 more. A float32 write, or rounding toward zero, would break it.
    const expected = await referenceRegMean(
      owners.map((o) => ({ model: o.model, texts: o.rows.map((row) => row.text) })),
      { tokenizer: EXAMPLE_TOKENIZER, maxLength: MAX_LENGTH, alpha: ALPHA },
    );
    const actual = await mergedWeights(out, expected.keys());
    let worst = 0;
    for (const [name, solution] of expected) worst = Math.max(worst, relativeFrobenius(actual.get(name)!, solution));
    expect(worst).toBeLessThanOrEqual(4e-4);
    console.log(`${preset} float16: worst relative Frobenius error of a merged layer vs float64 RegMean = ${worst.toExponential(2)}`);
  });
});
