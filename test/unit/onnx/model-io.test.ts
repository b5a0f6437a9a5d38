// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { ModelProto, TensorProto } from '../../../proto/index.js';
import { ErrorCode, GramfuseError } from '../../../shared/index.js';
import {
  createSession,
  externalDataFile,
  loadModel,
  indexGraph,
  type OnnxModel,
  modelInputs,
  probeFeeds,
  runSession,
  saveModel,
  saveModelStreamed,
  tensorBytes,
  withWeightsOnDisk,
} from '../../../shared/onnx/index.js';
import { ALL_MODELS, fixtureModel } from '../../helpers/fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-model-io-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function expectCode(promise: Promise<unknown> | (() => unknown), code: string, message: RegExp): Promise<void> {
  let caught: unknown;
  try {
    await (typeof promise === 'function' ? promise() : promise);
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(GramfuseError);
  expect((caught as GramfuseError).code).toBe(code);
  expect((caught as GramfuseError).message).toMatch(message);
}

describe('load → save round trip', () => {
  it.each(ALL_MODELS.map((m) => [m.path.split('/models/')[1]!, m.path]))('%s is reproduced byte for byte', async (_name, path) => {
    const model = await loadModel(path);
    const out = join(work, 'roundtrip.onnx');
    await saveModel(model, out);
    expect(Buffer.compare(readFileSync(out), readFileSync(path))).toBe(0);
    expect(readdirSync(work).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});

describe('streamed save (one tensor in memory at a time)', () => {
  it.each(ALL_MODELS.map((m) => [m.path.split('/models/')[1]!, m.path]))(
    '%s: same tensors and graph, and onnxruntime gives the same outputs from the file',
    async (_name, path) => {
      const model = await loadModel(path);
      const out = join(work, 'streamed.onnx');
      await saveModelStreamed(model, out, (tensor) => Promise.resolve(tensorBytes(model, tensor)));
      const reloaded = await loadModel(out);
      const withoutTensors = (m: typeof model): Buffer =>
        Buffer.from(ModelProto.encode({ ...m.proto, graph: { ...m.proto.graph!, initializer: [] } }).finish());
      expect(Buffer.compare(withoutTensors(reloaded), withoutTensors(model))).toBe(0);
      expect(reloaded.proto.graph!.initializer.map((t) => t.name)).toEqual(model.proto.graph!.initializer.map((t) => t.name));
      for (const [i, tensor] of reloaded.proto.graph!.initializer.entries())
        expect(
          Buffer.compare(Buffer.from(tensorBytes(reloaded, tensor)), Buffer.from(tensorBytes(model, model.proto.graph!.initializer[i]!))),
        ).toBe(0);
      // onnxruntime parses the file's own bytes (initializers after the other graph fields).
      const { feeds } = probeFeeds(modelInputs(indexGraph(model.proto.graph!)));
      const a = await createSession(model);
      const b = await createSession(readFileSync(out));
      const [x, y] = [await runSession(a, feeds, 'original'), await runSession(b, feeds, 'streamed')];
      await a.release();
      await b.release();
      for (const name of Object.keys(x))
        expect(Array.from(y[name]!.data as Float32Array)).toEqual(Array.from(x[name]!.data as Float32Array));
    },
  );
});

/** The model's first output on the probe batch, run by onnxruntime. */
async function firstOutput(model: OnnxModel): Promise<number[]> {
  const session = await createSession(model);
  try {
    const out = await runSession(session, probeFeeds(modelInputs(indexGraph(model.proto.graph!))).feeds, model.source);
    return Array.from(out[session.outputNames[0]!]!.data as Float32Array);
  } finally {
    await session.release();
  }
}

describe('external data', () => {
  it('saves tensors to a side file and loads them back with the same values', async () => {
    const source = await loadModel(fixtureModel('tiny', 't5-a'));
    const dir = mkdtempSync(join(work, 'ext-'));
    const out = join(dir, 'model.onnx');
    await saveModel(source, out, { externalData: 'always' });
    expect(existsSync(join(dir, 'model.onnx.data'))).toBe(true);
    const reloaded = await loadModel(out);
    const external = reloaded.proto.graph!.initializer.filter((t) => t.dataLocation === 1);
    expect(external.length).toBeGreaterThan(5);
    for (const tensor of reloaded.proto.graph!.initializer) {
      const original = source.proto.graph!.initializer.find((t) => t.name === tensor.name)!;
      expect(Buffer.compare(Buffer.from(tensorBytes(reloaded, tensor)), Buffer.from(tensorBytes(source, original)))).toBe(0);
    }
    // The model records its side file's SHA-256 (what a download checks the side file against).
    expect(externalDataFile(reloaded)).toEqual({
      location: 'model.onnx.data',
      sha256: createHash('sha256')
        .update(readFileSync(join(dir, 'model.onnx.data')))
        .digest('hex'),
    });
    // onnxruntime reads the side file itself (the session is told its folder), with the same outputs as inline.
    expect(await firstOutput(reloaded)).toEqual(await firstOutput(source));
    // Saving inline again reproduces the original file exactly (no side file digest left behind).
    await saveModel(reloaded, join(dir, 'inline.onnx'), { externalData: 'never' });
    expect(Buffer.compare(readFileSync(join(dir, 'inline.onnx')), readFileSync(fixtureModel('tiny', 't5-a')))).toBe(0);
  });

  it('withWeightsOnDisk: weights to a private side file, the graph alone in memory, the same outputs; dispose removes it', async () => {
    const source = await loadModel(fixtureModel('tiny', 't5-a'));
    const small = await withWeightsOnDisk(source); // under the default threshold: returned as it is
    expect(small.model).toBe(source);
    const moved = await withWeightsOnDisk(source, 0);
    const graph = moved.model.proto.graph!;
    expect(graph.initializer.filter((t) => t.dataLocation === 1).length).toBeGreaterThan(5);
    expect(graph.initializer.every((t) => t.dataLocation === 1 || (t.rawData?.byteLength ?? 0) < 1024)).toBe(true);
    const dir = moved.model.baseDir!;
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(await firstOutput(moved.model)).toEqual(await firstOutput(source));
    await moved.dispose();
    expect(existsSync(dir)).toBe(false);
  });

  it('writes a side file from tensor values given one at a time (a merged model of any size)', async () => {
    const source = await loadModel(fixtureModel('tiny', 't5-a'));
    const dir = mkdtempSync(join(work, 'ext-source-'));
    const asked: string[] = [];
    const doubled = (tensor: TensorProto): Promise<Uint8Array> => {
      asked.push(tensor.name!);
      const bytes = tensorBytes(source, tensor);
      if (tensor.dataType !== 1) return Promise.resolve(bytes);
      return Promise.resolve(new Uint8Array(Float32Array.from(new Float32Array(new Uint8Array(bytes).buffer), (v) => 2 * v).buffer));
    };
    await saveModel(source, join(dir, 'model.onnx'), { externalData: 'always', tensorBytes: doubled });
    expect(asked).toEqual(source.proto.graph!.initializer.map((t) => t.name)); // each once, in order
    const written = await loadModel(join(dir, 'model.onnx'));
    for (const tensor of source.proto.graph!.initializer.filter((t) => t.dataType === 1)) {
      const a = new Float32Array(
        new Uint8Array(
          tensorBytes(
            written,
            written.proto.graph!.initializer.find((t) => t.name === tensor.name)!,
          ),
        ).buffer,
      );
      const b = new Float32Array(new Uint8Array(tensorBytes(source, tensor)).buffer);
      expect(a.every((v, i) => v === 2 * b[i]!)).toBe(true);
    }
    // A value of the wrong size is refused and leaves nothing behind.
    const other = join(mkdtempSync(join(work, 'ext-bad-')), 'model.onnx');
    await expectCode(
      saveModel(source, other, { externalData: 'always', tensorBytes: () => Promise.resolve(new Uint8Array(3)) }),
      'INTERNAL',
      /bytes/,
    );
    expect(readdirSync(join(other, '..'))).toEqual([]);
  });

  it('reports a missing side file with a coded error naming the tensor and the file', async () => {
    const dir = mkdtempSync(join(work, 'ext-missing-'));
    const out = join(dir, 'model.onnx');
    await saveModel(await loadModel(fixtureModel('tiny', 't5-a')), out, { externalData: 'always' });
    rmSync(join(dir, 'model.onnx.data'));
    const model = await loadModel(out);
    const tensor = model.proto.graph!.initializer.find((t) => t.dataLocation === 1)!;
    await expectCode(
      () => tensorBytes(model, tensor),
      ErrorCode.OnnxExternalData,
      /external data file .*model\.onnx\.data cannot be opened/,
    );
  });

  it('reports a truncated side file', async () => {
    const dir = mkdtempSync(join(work, 'ext-short-'));
    const out = join(dir, 'model.onnx');
    await saveModel(await loadModel(fixtureModel('tiny', 't5-a')), out, { externalData: 'always' });
    writeFileSync(join(dir, 'model.onnx.data'), readFileSync(join(dir, 'model.onnx.data')).subarray(0, 1000));
    const model = await loadModel(out);
    const last = model.proto.graph!.initializer.filter((t) => t.dataLocation === 1).at(-1)!;
    await expectCode(() => tensorBytes(model, last), ErrorCode.OnnxExternalData, /has 1000 bytes, the tensor needs bytes/);
  });
});

describe('tensor storage forms', () => {
  it('reads typed fields (float_data, int64_data) as little-endian bytes', async () => {
    const model = await loadModel(fixtureModel('tiny', 't5-a'));
    const floats = TensorProto.fromPartial({ name: 'f', dataType: 1, dims: [2n, 2n], floatData: [1, -2, 3.5, 0.25] });
    expect(Array.from(new Float32Array(tensorBytes(model, floats).slice().buffer))).toEqual([1, -2, 3.5, 0.25]);
    const ints = TensorProto.fromPartial({ name: 'i', dataType: 7, dims: [3n], int64Data: [1n, -5n, 9n] });
    expect(Array.from(new BigInt64Array(tensorBytes(model, ints).slice().buffer))).toEqual([1n, -5n, 9n]);
  });

  it('rejects a tensor whose byte count disagrees with its shape', async () => {
    const model = await loadModel(fixtureModel('tiny', 't5-a'));
    const bad = TensorProto.fromPartial({ name: 'w', dataType: 1, dims: [4n, 4n], rawData: new Uint8Array(12) });
    await expectCode(
      () => tensorBytes(model, bad),
      ErrorCode.OnnxMalformed,
      /tensor w: holds 12 bytes but its shape \[4, 4\] of float32 needs 64/,
    );
  });
});

describe('bad files', () => {
  it('a missing file', async () => {
    await expectCode(loadModel(join(work, 'nope.onnx')), ErrorCode.FileNotFound, /nope\.onnx: no such file/);
  });

  it('an empty file', async () => {
    writeFileSync(join(work, 'empty.onnx'), '');
    await expectCode(loadModel(join(work, 'empty.onnx')), ErrorCode.OnnxMalformed, /not a valid ONNX model \(the file is empty\)/);
  });

  it('a file that is not ONNX', async () => {
    writeFileSync(join(work, 'text.onnx'), 'this is a text file, not a model\n'.repeat(20));
    await expectCode(loadModel(join(work, 'text.onnx')), ErrorCode.OnnxMalformed, /not a valid ONNX model/);
  });

  it('a truncated model', async () => {
    const bytes = readFileSync(fixtureModel('tiny', 'gpt2-a'));
    writeFileSync(join(work, 'cut.onnx'), bytes.subarray(0, Math.floor(bytes.length / 2)));
    await expectCode(loadModel(join(work, 'cut.onnx')), ErrorCode.OnnxMalformed, /truncated|no IR version or no graph/);
  });

  it('saving into a missing directory leaves nothing behind', async () => {
    const model = await loadModel(fixtureModel('tiny', 'gpt2-a'));
    await expectCode(
      saveModel(model, join(work, 'missing-dir', 'm.onnx')),
      ErrorCode.FileNotFound,
      /missing-dir: no such file or directory .*create the directory first/,
    );
    expect(existsSync(join(work, 'missing-dir'))).toBe(false);
  });

  it('a model decoded from bytes has the same proto as from its path', async () => {
    const path = fixtureModel('tiny', 'gpt2-a');
    const fromPath = await loadModel(path);
    const fromBytes = await loadModel(readFileSync(path));
    expect(
      Buffer.compare(Buffer.from(ModelProto.encode(fromBytes.proto).finish()), Buffer.from(ModelProto.encode(fromPath.proto).finish())),
    ).toBe(0);
  });
});
