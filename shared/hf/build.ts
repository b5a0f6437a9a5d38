// A Hugging Face directory as an ONNX model: config.json → architecture → graph, weights located in the
// safetensors file(s). Float32 weights are external data pointing at the files' own byte ranges (nothing copied: the
// graph is kilobytes and onnxruntime reads the weights from the checkpoint itself); F16/BF16/F64 weights are converted
// to float32 initializers once (compute is float32), which costs 2× their stored size in memory for a half-precision
// checkpoint. The model's baseDir is the directory, so every ONNX path (tensorBytes, sessions, saveModel) reads it.
import { closeSync, openSync, readSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import { GraphProto, ModelProto, NodeProto, ValueInfoProto } from '../../proto/index.js';
import { ErrorCode, fileError, GramfuseError } from '../errors.js';
import type { OnnxModel } from '../onnx/model-io.js';
import { type CheckpointTensorLocation, locateCheckpointTensors } from './checkpoint-files.js';
import { type HfModelConfig, parseHfConfig } from './config.js';
import { buildDecoder } from './decoder.js';
import { buildEncoder, encoderInputs } from './encoder.js';
import { createGraphBuilder } from './graph-builder.js';

/** Metadata key naming the architecture a built model came from (`config.json`'s `architectures[0]`). */
export const HF_ARCHITECTURE_KEY = 'gramfuse.hf_architecture';

export interface BuiltHfModel {
  readonly model: OnnxModel;
  readonly config: HfModelConfig;
  /** Bytes held in memory for weights converted to float32 (0 for an all-F32 checkpoint). */
  readonly convertedBytes: number;
  /** Safetensors dtypes of the weights the graph uses, by name (what the merged directory is written back in). */
  readonly storedDtypes: ReadonlyMap<string, string>;
}

function readStored(dir: string, tensor: CheckpointTensorLocation): Uint8Array {
  const path = join(dir, tensor.file);
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    throw fileError(error, path, 'reading a checkpoint tensor');
  }
  try {
    const bytes = Buffer.allocUnsafe(tensor.end - tensor.begin);
    let done = 0;
    while (done < bytes.byteLength) {
      const read = readSync(fd, bytes, done, bytes.byteLength - done, tensor.begin + done);
      if (read === 0)
        throw new GramfuseError(ErrorCode.CheckpointMismatch, `${path}: tensor ${tensor.name} is cut short; the file is truncated`, {
          facts: { path, tensor: tensor.name },
        });
      done += read;
    }
    return bytes;
  } finally {
    closeSync(fd);
  }
}

/** Builds the ONNX model of a Hugging Face checkpoint directory (config.json + safetensors, sharded or not). */
export async function buildHfModel(directory: string): Promise<BuiltHfModel> {
  const dir = resolve(directory);
  const configPath = join(dir, 'config.json');
  const text = await readFile(configPath, 'utf8').catch((error: unknown) => {
    throw fileError(error, configPath, 'reading the Hugging Face config');
  });
  const config = parseHfConfig(text, configPath);
  const tensors = await locateCheckpointTensors(dir);
  const b = createGraphBuilder(dir, tensors, (t) => readStored(dir, t));
  const logits = config.family === 'decoder' ? buildDecoder(config, b) : buildEncoder(config, b);
  b.node.push(NodeProto.fromPartial({ opType: 'Identity', name: 'logits', input: [logits], output: ['logits'] }));
  const input = (name: string): ValueInfoProto =>
    ValueInfoProto.fromPartial({
      name,
      type: { tensorType: { elemType: 7, shape: { dim: [{ dimParam: 'batch' }, { dimParam: 'sequence' }] } } },
    });
  const outputDims =
    config.family === 'decoder' && config.head === 'causal-lm'
      ? [{ dimParam: 'batch' }, { dimParam: 'sequence' }, { dimValue: BigInt(config.vocab) }]
      : [{ dimParam: 'batch' }, { dimValue: BigInt(config.labels) }];
  const graph = GraphProto.fromPartial({
    name: config.architecture,
    node: b.node,
    initializer: b.initializer,
    input: ['input_ids', 'attention_mask', ...(config.family === 'encoder' ? encoderInputs(config) : [])].map(input),
    output: [ValueInfoProto.fromPartial({ name: 'logits', type: { tensorType: { elemType: 1, shape: { dim: outputDims } } } })],
  });
  const proto = ModelProto.fromPartial({
    irVersion: 8n,
    producerName: 'gramfuse shared/hf',
    opsetImport: [{ domain: '', version: 17n }],
    graph,
    metadataProps: [
      { key: HF_ARCHITECTURE_KEY, value: config.architecture },
      // What `eval` reads label names from (agent/evaluate.ts), as a JSON list in logit order.
      ...((config.family === 'encoder' || config.head === 'sequence-classification') && config.labelNames !== undefined
        ? [{ key: 'labels', value: JSON.stringify(config.labelNames) }]
        : []),
    ],
  });
  const storedDtypes = new Map(b.initializer.map((t) => [t.name ?? '', tensors.get(t.name ?? '')?.dtype ?? 'F32']));
  return { model: { proto, baseDir: dir, source: directory }, config, convertedBytes: b.convertedBytes(), storedDtypes };
}
