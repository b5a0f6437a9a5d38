// Issue 37 item 10: a checkpoint or model tensor of 2 GiB or more used to abort Node natively (exit 134: one fs read
// takes at most 2 GiB − 1) in export / merge / inspect / job download --hf-checkpoint. Here the tensor is real in
// size but costs no disk: a 2 GiB + 4 KiB embedding table in SPARSE files (truncate), both as a Hugging Face
// checkpoint tensor and as an ONNX model's external data. Matching by value hashes both a slice at a time and
// completes; what must hold the tensor whole (writing it out) gives a coded error; never an abort. External-data
// offsets and lengths that are not whole byte counts are ONNX_EXTERNAL_DATA.
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto } from '../../proto/index.js';
import { ErrorCode, exitCodeByErrorCode, type GramfuseError } from '../../shared/index.js';
import { loadModel, MAX_TENSOR_READ_BYTES, tensorBytes } from '../../shared/onnx/index.js';
import { runCli } from '../helpers/cli.js';
import { exampleModel } from '../helpers/examples.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-large-tensor-'));
const ROWS = 2 ** 19 + 1;
const WIDTH = 1024;
const TABLE_BYTES = ROWS * WIDTH * 4; // 2 GiB + 4 KiB of float32
const HEAD = Float32Array.from({ length: WIDTH * 2 }, (_, i) => ((i * 37) % 101) / 101 - 0.5); // [WIDTH, 2]
const model = join(work, 'model', 'big.onnx');
const checkpoint = join(work, 'checkpoint');

/** An ONNX model: ids → Gather(table [ROWS, WIDTH], external) → mean over the sequence → MatMul(head [WIDTH, 2]). */
function bigModel(tableExternal: { key: string; value: string }[]): ModelProto {
  const input = ValueInfoProto.fromPartial({
    name: 'input_ids',
    type: { tensorType: { elemType: 7, shape: { dim: [{ dimParam: 'batch' }, { dimParam: 'sequence' }] } } },
  });
  return ModelProto.fromPartial({
    irVersion: 8n,
    opsetImport: [{ domain: '', version: 17n }],
    graph: GraphProto.fromPartial({
      name: 'big',
      node: [
        NodeProto.fromPartial({ opType: 'Gather', name: 'embed', input: ['table', 'input_ids'], output: ['x'] }),
        NodeProto.fromPartial({
          opType: 'ReduceMean',
          name: 'pool',
          input: ['x'],
          output: ['pooled'],
          attribute: [
            { name: 'axes', type: 7, ints: [1n] },
            { name: 'keepdims', type: 2, i: 0n },
          ],
        }),
        NodeProto.fromPartial({ opType: 'MatMul', name: 'head', input: ['pooled', 'head.weight'], output: ['logits'] }),
      ],
      initializer: [
        TensorProto.fromPartial({
          name: 'table',
          dims: [BigInt(ROWS), BigInt(WIDTH)],
          dataType: 1,
          dataLocation: 1,
          externalData: tableExternal,
        }),
        TensorProto.fromPartial({ name: 'head.weight', dims: [BigInt(WIDTH), 2n], dataType: 1, rawData: new Uint8Array(HEAD.buffer) }),
      ],
      input: [input],
      output: [
        ValueInfoProto.fromPartial({
          name: 'logits',
          type: { tensorType: { elemType: 1, shape: { dim: [{ dimParam: 'batch' }, { dimValue: 2n }] } } },
        }),
      ],
    }),
  });
}

const external = (offset: string, length: string) => [
  { key: 'location', value: 'big.onnx.data' },
  { key: 'offset', value: offset },
  { key: 'length', value: length },
];

beforeAll(() => {
  mkdirSync(join(work, 'model'));
  writeFileSync(model, ModelProto.encode(bigModel(external('0', String(TABLE_BYTES)))).finish());
  writeFileSync(join(work, 'model', 'big.onnx.data'), '');
  truncateSync(join(work, 'model', 'big.onnx.data'), TABLE_BYTES); // sparse: zeros, no blocks
  // The checkpoint it was exported from: the table as stored, the head as an nn.Linear weight [2, WIDTH].
  mkdirSync(checkpoint);
  const head = new Float32Array(2 * WIDTH);
  for (let i = 0; i < WIDTH; i++) for (let o = 0; o < 2; o++) head[o * WIDTH + i] = HEAD[i * 2 + o]!;
  let json = JSON.stringify({
    'model.embed_tokens.weight': { dtype: 'F32', shape: [ROWS, WIDTH], data_offsets: [0, TABLE_BYTES] },
    'lm_head.weight': { dtype: 'F32', shape: [2, WIDTH], data_offsets: [TABLE_BYTES, TABLE_BYTES + head.byteLength] },
  });
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  const path = join(checkpoint, 'model.safetensors');
  writeFileSync(path, Buffer.concat([length, Buffer.from(json)]));
  truncateSync(path, 8 + json.length + TABLE_BYTES);
  const fd = openSync(path, 'r+');
  writeSync(fd, new Uint8Array(head.buffer), 0, head.byteLength, 8 + json.length + TABLE_BYTES);
  closeSync(fd);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('tensors of 2 GiB and more', () => {
  it('are past one read: the table is', () => expect(TABLE_BYTES).toBeGreaterThan(MAX_TENSOR_READ_BYTES));

  // Reaching the write means the names were matched by value: both 2 GiB tables hashed a slice at a time.
  it(
    '`export --hf-checkpoint` names it, then refuses to write it whole with ONNX_EXTERNAL_DATA, no abort',
    { timeout: 300_000 },
    async () => {
      const out = join(work, 'hf-out');
      const result = await runCli(['export', model, '--hf-checkpoint', checkpoint, '--hf-out', out]);
      expect(result.code, result.stderr).toBe(exitCodeByErrorCode.ONNX_EXTERNAL_DATA);
      expect(result.stderr).toMatch(/ONNX_EXTERNAL_DATA: tensor table: 2147487744 bytes, past the 2147483647 bytes \(2 GiB − 1\)/);
    },
  );

  it(
    '`inspect --hf-checkpoint` with a 2 GiB checkpoint tensor no parameter has: CHECKPOINT_MISMATCH, no abort',
    { timeout: 300_000 },
    async () => {
      const result = await runCli(['inspect', exampleModel('org0'), '--hf-checkpoint', checkpoint]);
      expect(result.code, result.stderr).toBe(exitCodeByErrorCode.CHECKPOINT_MISMATCH);
      expect(result.stderr).toMatch(/CHECKPOINT_MISMATCH: .*model\.embed_tokens\.weight/);
    },
  );

  it('reading the whole table is ONNX_EXTERNAL_DATA naming it, not a native abort', async () => {
    const loaded = await loadModel(model);
    const table = loaded.proto.graph!.initializer.find((t) => t.name === 'table')!;
    let error: GramfuseError | undefined;
    try {
      tensorBytes(loaded, table);
    } catch (e) {
      error = e as GramfuseError;
    }
    expect(error?.code).toBe(ErrorCode.OnnxExternalData);
    expect(error?.message).toMatch(/^tensor table: 2147487744 bytes/);
  });
});

describe('external data offsets and lengths', () => {
  const cases: [string, string, string, RegExp][] = [
    ['NaN offset', 'NaN', '8192', /external data offset "NaN" is not a whole number of bytes/],
    ['negative offset', '-4096', '8192', /external data offset "-4096" is not a whole number of bytes/],
    ['fractional offset', '0.5', '8192', /external data offset "0.5" is not a whole number of bytes/],
    ['offset past 2^53', '9007199254740993', '8192', /external data offset "9007199254740993" is not a whole number/],
    ['NaN length', '0', 'x', /external data length "x" is not a whole number of bytes/],
    ['length other than the shape needs', '0', '16', /external data length 16, but its shape \[1024, 2\] needs 8192 bytes/],
  ];
  for (const [what, offset, length, message] of cases)
    it(`${what}: ONNX_EXTERNAL_DATA`, async () => {
      const dir = join(work, what.replace(/\W+/g, '-'));
      mkdirSync(dir);
      const proto = bigModel(external('0', String(TABLE_BYTES)));
      proto.graph!.initializer[1] = TensorProto.fromPartial({
        name: 'head.weight',
        dims: [BigInt(WIDTH), 2n],
        dataType: 1,
        dataLocation: 1,
        externalData: [
          { key: 'location', value: 'head.data' },
          { key: 'offset', value: offset },
          { key: 'length', value: length },
        ],
      });
      writeFileSync(join(dir, 'head.data'), new Uint8Array(HEAD.buffer));
      writeFileSync(join(dir, 'm.onnx'), ModelProto.encode(proto).finish());
      const loaded = await loadModel(join(dir, 'm.onnx'));
      const head = loaded.proto.graph!.initializer[1]!;
      expect(() => tensorBytes(loaded, head)).toThrow(message);
      try {
        tensorBytes(loaded, head);
      } catch (e) {
        expect((e as GramfuseError).code).toBe(ErrorCode.OnnxExternalData);
      }
    });
});
