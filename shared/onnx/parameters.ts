import { createHash } from 'node:crypto';

import { ModelProto, TensorProto } from '../../proto/index.js';
import { decodeFloats, type Dtype, dtypeFromOnnx, encodeFloats, type FloatDtype, isFloatDtype, typedArrayBytes } from '../dtypes.js';
import { ErrorCode, GramfuseError } from '../errors.js';
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

/** A float parameter's values as float64 (float32, float64, float16 and bfloat16 parameters). */
export function readParameterValues(model: OnnxModel, name: string): Float64Array {
  const tensor = model.proto.graph!.initializer.find((t) => t.name === name);
  if (tensor === undefined) {
    throw new GramfuseError(ErrorCode.OnnxMalformed, `${model.source}: parameter ${name} is not an initializer of the model`, {
      facts: { parameter: name },
    });
  }
  const info = dtypeFromOnnx(tensor.dataType ?? 0, `parameter ${name}`);
  const bytes = tensorBytes(model, tensor);
  if (!isFloatDtype(info.dtype))
    throw new GramfuseError(ErrorCode.UnsupportedDtype, `${model.source}: parameter ${name} is ${info.dtype}, not a float type`, {
      facts: { parameter: name, dtype: info.dtype },
    });
  return decodeFloats(bytes, info.dtype);
}

/**
 * How far model `a`'s parameters are from model `b`'s (same graph): the largest, over `b`'s float parameters, of
 * max |a − b| / max |b| (the absolute difference for an all-zero parameter). 0 when they are equal.
 */
export function maxRelativeParameterDifference(a: OnnxModel, b: OnnxModel): number {
  let worst = 0;
  for (const p of listParameters(b)) {
    const x = readParameterValues(a, p.name);
    const y = readParameterValues(b, p.name);
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < y.length; i++) {
      diff = Math.max(diff, Math.abs(x[i]! - y[i]!));
      scale = Math.max(scale, Math.abs(y[i]!));
    }
    worst = Math.max(worst, scale === 0 ? diff : diff / scale);
  }
  return worst;
}

/** The model with parameter values replaced (cast to each parameter's own dtype); nothing else changes. */
export function withParameterValues(model: OnnxModel, values: ReadonlyMap<string, Float64Array>): OnnxModel {
  const graph = model.proto.graph!;
  const seen = new Set<string>();
  const initializer = graph.initializer.map((tensor) => {
    const name = tensor.name ?? '';
    const value = values.get(name);
    if (value === undefined) return tensor;
    seen.add(name);
    const info = dtypeFromOnnx(tensor.dataType ?? 0, `parameter ${name}`);
    if (value.length !== tensorElementCount(tensor)) {
      throw new GramfuseError(
        ErrorCode.Internal,
        `parameter ${name}: ${value.length} values for shape [${tensorShape(tensor).join(', ')}]`,
      );
    }
    if (!isFloatDtype(info.dtype))
      throw new GramfuseError(ErrorCode.UnsupportedDtype, `parameter ${name}: cannot write ${info.dtype} values`, {
        facts: { parameter: name },
      });
    return tensorWithBytes(tensor, encodeFinite(name, value, info.dtype));
  });
  const missing = [...values.keys()].filter((name) => !seen.has(name));
  if (missing.length > 0)
    throw new GramfuseError(ErrorCode.Internal, `merged values for tensors the template does not have: ${missing.slice(0, 5).join(', ')}`);
  return { ...model, proto: { ...model.proto, graph: { ...graph, initializer } } };
}

/**
 * Merged values in a parameter's own dtype, refused (NON_FINITE, naming the parameter and index) where a value is
 * not finite — before or after rounding: a float16 parameter cannot hold 70 000. `offset` is the slice's first index.
 */
export function encodeFinite(name: string, values: Float64Array, dtype: FloatDtype, offset = 0): Uint8Array {
  // float32 is checked on its own typed array (no float64 copy); the 16-bit formats on their decoded values.
  const narrow = dtype === 'float32' ? Float32Array.from(values) : undefined;
  const bytes = narrow !== undefined ? typedArrayBytes(narrow) : encodeFloats(values, dtype);
  const check = dtype === 'float64' ? values : (narrow ?? decodeFloats(bytes, dtype));
  for (let i = 0; i < check.length; i++) {
    if (!Number.isFinite(check[i]!))
      throw new GramfuseError(
        ErrorCode.NonFinite,
        Number.isFinite(values[i]!)
          ? `parameter ${name}: merged value ${values[i]} at index ${offset + i} does not fit ${dtype}; nothing was written`
          : `parameter ${name}: merged value ${values[i]} at index ${offset + i} is not finite; nothing was written`,
        { facts: { parameter: name, index: offset + i, dtype } },
      );
  }
  return bytes;
}
