import { createHash } from 'node:crypto';

import { ModelProto, TensorProto } from '../../proto/index.js';
import { type Dtype, dtypeFromOnnx } from '../dtypes.js';
import { type OnnxModel, tensorBytes, tensorElementCount, tensorShape, tensorWithBytes } from './model-io.js';

/** A float initializer: a weight, bias, norm scale or embedding. Its value is what merging changes. */
export interface Parameter {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  readonly bytes: number;
}

/** Float initializers are parameters; integer/bool initializers and Constant nodes are structure. */
export function isParameterTensor(tensor: TensorProto): boolean {
  return dtypeFromOnnx(tensor.dataType ?? 0, `initializer ${tensor.name ?? '?'}`).float;
}

export function listParameters(model: OnnxModel): Parameter[] {
  return model.proto.graph!.initializer.filter(isParameterTensor).map((tensor) => {
    const info = dtypeFromOnnx(tensor.dataType ?? 0, `initializer ${tensor.name ?? '?'}`);
    return { name: tensor.name ?? '', dtype: info.dtype, shape: tensorShape(tensor), bytes: tensorElementCount(tensor) * info.bytes };
  });
}

/**
 * SHA-256 over what makes two models mergeable: the graph (nodes, attributes, inputs, outputs, opsets),
 * the values of structural constants, and each parameter's name, dtype and shape — not parameter values,
 * metadata, doc strings or producer fields. Models fine-tuned from one base and exported alike agree.
 */
export function fingerprint(model: OnnxModel): string {
  const proto = model.proto;
  const graph = proto.graph!;
  const initializers = graph.initializer.map((tensor) => {
    if (isParameterTensor(tensor)) return TensorProto.fromPartial({ name: tensor.name, dims: tensor.dims, dataType: tensor.dataType });
    // Structure constants hash by value, however they are stored (raw, typed fields, external).
    return { ...tensorWithBytes(tensor, tensorBytes(model, tensor)), docString: undefined, metadataProps: [] };
  });
  const canonical: ModelProto = {
    irVersion: proto.irVersion,
    opsetImport: proto.opsetImport,
    metadataProps: [],
    trainingInfo: [],
    functions: proto.functions,
    configuration: [],
    graph: {
      ...graph,
      name: undefined,
      docString: undefined,
      metadataProps: [],
      initializer: initializers,
      // Shape annotations are hints that exporters fill differently; they don't change the function.
      valueInfo: [],
      node: graph.node.map((node) => ({ ...node, docString: undefined, metadataProps: [] })),
    },
  };
  return `sha256:${createHash('sha256').update(ModelProto.encode(canonical).finish()).digest('hex')}`;
}
