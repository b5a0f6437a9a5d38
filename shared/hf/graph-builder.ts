// What the architecture builders write their ONNX graphs with: the checkpoint's tensors as initializers named exactly
// as in the checkpoint (float32 ones as external data pointing at the safetensors file's own bytes, others converted to
// float32 once), Constant nodes for structure, and nodes named in creation order — the idioms of
// bench/synthetic-decoder.ts, so the analysis (linear layers through Transpose, Gram groups, probe row rules) reads
// the result as it reads an export.
import { AttributeProto, NodeProto, TensorProto } from '../../proto/index.js';
import { decodeFloats, typedArrayBytes } from '../dtypes.js';
import { ErrorCode, GramfuseError } from '../errors.js';
import type { CheckpointTensorLocation } from './checkpoint-files.js';

const HALF_DTYPES: Readonly<Record<string, 'float16' | 'bfloat16' | 'float64'>> = { F16: 'float16', BF16: 'bfloat16', F64: 'float64' };

export interface GraphBuilder {
  readonly initializer: TensorProto[];
  readonly node: NodeProto[];
  /** The checkpoint tensor `name` as a float32 initializer of `shape` (once, however often it is asked for). */
  readonly weight: (name: string, shape: readonly number[]) => string;
  /** True when the checkpoint holds `name`. */
  readonly has: (name: string) => boolean;
  /** A Constant node (structure, not a parameter). @default dims [values.length] */
  readonly constant: (values: ArrayLike<number>, dtype: 'int64' | 'float', dims?: readonly number[]) => string;
  /** A node with one output, named `<type>_<n>`; returns the output. */
  readonly op: (type: string, inputs: string[], attributes?: AttributeProto[]) => string;
  /** A node with several outputs (`<type>_<n>_<i>`); returns them. */
  readonly ops: (type: string, inputs: string[], attributes: AttributeProto[], outputs: number) => string[];
  readonly ints: (name: string, values: readonly number[]) => AttributeProto;
  readonly int: (name: string, value: number) => AttributeProto;
  readonly float: (name: string, value: number) => AttributeProto;
  /** Bytes the graph holds in memory for converted (non-float32) weights: the cost of F16/BF16 storage. */
  readonly convertedBytes: () => number;
}

/**
 * A builder over a directory's tensors. `readBytes` reads one tensor's stored bytes (only for dtypes other than F32,
 * which stay on disk); `dir` names the directory in messages.
 */
export function createGraphBuilder(
  dir: string,
  tensors: ReadonlyMap<string, CheckpointTensorLocation>,
  readBytes: (tensor: CheckpointTensorLocation) => Uint8Array,
): GraphBuilder {
  const initializer: TensorProto[] = [];
  const node: NodeProto[] = [];
  const made = new Set<string>();
  let converted = 0;
  let counter = 0;
  const ops = (type: string, inputs: string[], attributes: AttributeProto[], outputs: number): string[] => {
    const name = `${type.toLowerCase()}_${counter++}`;
    const out = outputs === 1 ? [name] : Array.from({ length: outputs }, (_, i) => `${name}_${i}`);
    node.push(NodeProto.fromPartial({ opType: type, name, input: inputs, output: out, attribute: attributes }));
    return out;
  };
  const weight = (name: string, shape: readonly number[]): string => {
    if (made.has(name)) return name;
    const location = tensors.get(name);
    if (location === undefined)
      throw new GramfuseError(
        ErrorCode.CheckpointMismatch,
        `${dir}: the checkpoint has no tensor ${name}, which config.json's architecture needs; the weights are not this config's model`,
        { facts: { path: dir, tensor: name } },
      );
    if (location.shape.length !== shape.length || location.shape.some((d, i) => d !== shape[i]))
      throw new GramfuseError(
        ErrorCode.CheckpointMismatch,
        `${dir}: tensor ${name} has shape [${location.shape.join(', ')}], config.json implies [${shape.join(', ')}]; the weights are not this config's model`,
        { facts: { path: dir, tensor: name } },
      );
    const dims = shape.map(BigInt);
    if (location.dtype === 'F32') {
      initializer.push(
        TensorProto.fromPartial({
          name,
          dims,
          dataType: 1,
          dataLocation: 1,
          externalData: [
            { key: 'location', value: location.file },
            { key: 'offset', value: String(location.begin) },
            { key: 'length', value: String(location.end - location.begin) },
          ],
        }),
      );
    } else {
      const source = HALF_DTYPES[location.dtype];
      if (source === undefined)
        throw new GramfuseError(
          ErrorCode.UnsupportedDtype,
          `${dir}: tensor ${name} is stored as ${location.dtype}; gramfuse builds models from F32, F16, BF16 and F64 weights`,
          { facts: { path: dir, tensor: name, dtype: location.dtype } },
        );
      const values = typedArrayBytes(Float32Array.from(decodeFloats(readBytes(location), source)));
      converted += values.byteLength;
      initializer.push(TensorProto.fromPartial({ name, dims, dataType: 1, rawData: values }));
    }
    made.add(name);
    return name;
  };
  return {
    initializer,
    node,
    weight,
    has: (name) => tensors.has(name),
    constant: (values, dtype, dims = [values.length]) => {
      const name = `const_${counter++}`;
      const bytes =
        dtype === 'int64'
          ? typedArrayBytes(BigInt64Array.from(Array.from(values, (v) => BigInt(v))))
          : typedArrayBytes(Float32Array.from(values));
      node.push(
        NodeProto.fromPartial({
          opType: 'Constant',
          name,
          output: [name],
          attribute: [
            AttributeProto.fromPartial({
              name: 'value',
              type: 4,
              t: TensorProto.fromPartial({ name, dims: dims.map(BigInt), dataType: dtype === 'int64' ? 7 : 1, rawData: bytes }),
            }),
          ],
        }),
      );
      return name;
    },
    op: (type, inputs, attributes = []) => ops(type, inputs, attributes, 1)[0]!,
    ops,
    ints: (name, values) => AttributeProto.fromPartial({ name, type: 7, ints: values.map(BigInt) }),
    int: (name, value) => AttributeProto.fromPartial({ name, type: 2, i: BigInt(value) }),
    float: (name, value) => AttributeProto.fromPartial({ name, type: 1, f: value }),
    convertedBytes: () => converted,
  };
}
