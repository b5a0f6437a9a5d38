// Past protobuf's 2 GB, end to end (issue #15): a 2.1 GiB model (kept as external data) goes through `agent run`
// with a 2.1 GiB statistics bundle (verified and uploaded a slice at a time), the coordinator writes the merged model
// as merged.onnx + merged.onnx.data, and the download brings both back, each checked against its SHA-256. One owner
// and `average` keep it to the transport: the merged tensors must equal the owner's, byte for byte.
// Disk: ≈ 17 GiB in a temp directory while it runs (model, template copy, bundle, committed statistics, solved
// parameters, merged model, safetensors, download), removed at the end; 2–4 minutes on 2 cores.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { graphBuilder } from '../../bench/graph-builder.js';
import { runAgent } from '../../agent/index.js';
import { connectFederation, downloadMergedModel } from '../../client/index.js';
import { GraphProto, ModelProto, NodeProto, ValueInfoProto } from '../../proto/index.js';
import { packageVersion } from '../../shared/index.js';
import { loadModel, PROTOBUF_LIMIT_BYTES, saveModel, tensorBytes } from '../../shared/onnx/index.js';
import { SMALL_JOB_OWNER_POLICY } from '../helpers/agent-options.js';
import { EXAMPLE_DATA, EXAMPLE_TOKENIZER } from '../helpers/examples.js';
import { type MtlsCoordinator, startMtlsCoordinator } from '../helpers/mtls-coordinator.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-large-'));
const models = join(work, 'models');
let federation: MtlsCoordinator;
const tlsOf = (name: string) => federation.tlsOf(name);
const VOCAB = 8192; // the example tokenizer's
const WIDTH = 4096;
const TABLES = 17; // 17 embedding tables of 8192 × 4096 float32 (128 MiB each): 2.125 GiB of parameters

/** Token embeddings summed from 17 tables, then one linear layer to 2 logits: 2.1 GiB, all but 32 KiB in the tables. */
async function writeLargeModel(path: string): Promise<void> {
  const b = graphBuilder(11);
  let x = b.op('Gather', [b.floats('table.0', [VOCAB, WIDTH], 'random'), 'input_ids']);
  for (let t = 1; t < TABLES; t++) x = b.op('Add', [x, b.op('Gather', [b.floats(`table.${t}`, [VOCAB, WIDTH], 'random'), 'input_ids'])]);
  const pooled = b.op('ReduceMean', [x], [b.ints('axes', [1]), b.int('keepdims', 0)]);
  b.node.push(
    NodeProto.fromPartial({
      opType: 'MatMul',
      name: 'head',
      input: [pooled, b.floats('head.weight', [WIDTH, 2], 'random')],
      output: ['logits'],
    }),
  );
  const input = (name: string) =>
    ValueInfoProto.fromPartial({
      name,
      type: { tensorType: { elemType: 7, shape: { dim: [{ dimParam: 'batch' }, { dimParam: 'sequence' }] } } },
    });
  const graph = GraphProto.fromPartial({
    name: 'large',
    node: b.node,
    initializer: b.initializer,
    input: [input('input_ids'), input('attention_mask')],
    output: [
      ValueInfoProto.fromPartial({
        name: 'logits',
        type: { tensorType: { elemType: 1, shape: { dim: [{ dimParam: 'batch' }, { dimValue: 2n }] } } },
      }),
    ],
  });
  const proto = ModelProto.fromPartial({ irVersion: 8n, opsetImport: [{ domain: '', version: 17n }], graph });
  await saveModel({ proto, baseDir: undefined, source: 'large' }, path, { externalData: 'always' });
}

beforeAll(async () => {
  mkdirSync(models);
  await writeLargeModel(join(models, 'model.onnx'));
  federation = await startMtlsCoordinator('large CA', ['org0'], { stateDir: join(work, 'state'), templateDirs: [models] });
}, 600_000);
afterAll(async () => {
  await federation?.server.close();
  rmSync(work, { recursive: true, force: true });
});

describe('a model past 2 GiB', () => {
  it(
    'moves a 2.1 GiB bundle through agent run and downloads the 2.1 GiB merged model with its external data',
    { timeout: 900_000 },
    async () => {
      const model = join(models, 'model.onnx');
      const creator = connectFederation({ address: federation.address, tls: tlsOf('creator') });
      try {
        await creator.createJob(
          JSON.stringify({ id: 'large', participants: ['org0'], merge: { method: 'average' }, policy: { minRowsPerGroup: 16 } }),
          { path: 'model.onnx' },
        );
        const result = await runAgent({
          connect: { address: federation.address, tls: tlsOf('org0') },
          jobId: 'large',
          workDir: join(work, 'agent'),
          yes: true,
          model,
          data: EXAMPLE_DATA('org0'),
          tokenizer: EXAMPLE_TOKENIZER,
          dtype: 'float32',
          maxLength: 16,
          batchSize: 16,
          maxExamples: 32,
          seed: 1,
          textField: 'text',
          device: 'cpu',
          toolVersion: packageVersion(),
          ownerPolicy: SMALL_JOB_OWNER_POLICY,
        });
        expect(result.bytesSent).toBeGreaterThan(PROTOBUF_LIMIT_BYTES);
        const final = await creator.watch('large', () => undefined);
        expect(final.state, final.failureMessage).toBe('done');

        mkdirSync(join(work, 'download'));
        const out = join(work, 'download', 'merged.onnx');
        const downloaded = await downloadMergedModel(creator, 'large', out, final.resultSha256);
        expect(downloaded.sha256).toBe(final.resultSha256);
        expect(downloaded.dataFile?.path).toBe(join(work, 'download', 'merged.onnx.data'));
        expect(statSync(downloaded.dataFile!.path).size).toBeGreaterThan(PROTOBUF_LIMIT_BYTES);

        // The one owner's average is its own model: every tensor equal, byte for byte, read from the side file.
        const [original, merged] = [await loadModel(model), await loadModel(out)];
        const digest = (m: typeof original, name: string): string =>
          createHash('sha256')
            .update(
              tensorBytes(
                m,
                m.proto.graph!.initializer.find((t) => t.name === name)!,
              ),
            )
            .digest('hex');
        for (const tensor of original.proto.graph!.initializer)
          expect(digest(merged, tensor.name!), tensor.name).toBe(digest(original, tensor.name!));
      } finally {
        creator.close();
      }
    },
  );
});
