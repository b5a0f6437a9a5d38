// What the synthetic models (bench/synthetic-bert.ts, bench/synthetic-decoder.ts) build their ONNX graphs with:
// seeded float initializers (the parameters), Constant nodes (structure), and nodes named in creation order.
// Floats are float32, or float16 for a whole graph (weights, float constants, activations: what an fp16 export has).
import { AttributeProto, NodeProto, TensorProto } from '../proto/index.js';
import { seededRandom } from '../agent/index.js';
import { encodeFloats } from '../shared/index.js';

export interface GraphBuilder {
  readonly initializer: TensorProto[];
  readonly node: NodeProto[];
  /** The graph's float element type (TensorProto.DataType): 1 float32, 10 float16. */
  readonly floatType: 1 | 10;
  /** A float initializer: seeded uniform values in ±scale, or all ones or zeros. */
  readonly floats: (name: string, dims: number[], fill: 'random' | 'ones' | 'zeros', scale?: number) => string;
  /** A Constant node (structure, not a parameter). @default dims [values.length] */
  readonly constant: (values: ArrayLike<number>, dtype: 'int64' | 'float', dims?: number[]) => string;
  /** A node with one output, named `<type>_<n>`; returns the output. */
  readonly op: (type: string, inputs: string[], attributes?: AttributeProto[]) => string;
  /** A node with several outputs (`<type>_<n>_<i>`); returns them. */
  readonly ops: (type: string, inputs: string[], attributes: AttributeProto[], outputs: number) => string[];
  readonly ints: (name: string, values: number[]) => AttributeProto;
  readonly int: (name: string, value: number) => AttributeProto;
  readonly float: (name: string, value: number) => AttributeProto;
}

export function graphBuilder(seed: number, dtype: 'float32' | 'float16' = 'float32'): GraphBuilder {
  const floatType = dtype === 'float16' ? 10 : 1;
  // The values are drawn as float32 either way, so a float16 model is its float32 twin rounded.
  const floatBytes = (values: Float32Array): Uint8Array =>
    dtype === 'float16' ? encodeFloats(Float64Array.from(values), 'float16') : new Uint8Array(values.buffer);
  // The agent's seeded generator (mulberry32): the weights only have to be reproducible.
  const next = seededRandom(seed);
  const initializer: TensorProto[] = [];
  const node: NodeProto[] = [];
  let counter = 0;
  const ops = (type: string, inputs: string[], attributes: AttributeProto[], outputs: number): string[] => {
    const name = `${type.toLowerCase()}_${counter++}`;
    const out = outputs === 1 ? [name] : Array.from({ length: outputs }, (_, i) => `${name}_${i}`);
    node.push(NodeProto.fromPartial({ opType: type, name, input: inputs, output: out, attribute: attributes }));
    return out;
  };
  return {
    floatType,
    initializer,
    node,
    floats: (name, dims, fill, scale = 0.04) => {
      const count = dims.reduce((a, b) => a * b, 1);
      const values = new Float32Array(count);
      if (fill === 'ones') values.fill(1);
      else if (fill === 'random') for (let i = 0; i < count; i++) values[i] = (next() - 0.5) * 2 * scale;
      initializer.push(TensorProto.fromPartial({ name, dims: dims.map(BigInt), dataType: floatType, rawData: floatBytes(values) }));
      return name;
    },
    constant: (values, dtype, dims = [values.length]) => {
      const name = `const_${counter++}`;
      const bytes =
        dtype === 'int64'
          ? new Uint8Array(BigInt64Array.from(Array.from(values, (v) => BigInt(v))).buffer)
          : floatBytes(Float32Array.from(values));
      node.push(
        NodeProto.fromPartial({
          opType: 'Constant',
          name,
          output: [name],
          attribute: [
            AttributeProto.fromPartial({
              name: 'value',
              type: 4,
              t: TensorProto.fromPartial({ name, dims: dims.map(BigInt), dataType: dtype === 'int64' ? 7 : floatType, rawData: bytes }),
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
  };
}
