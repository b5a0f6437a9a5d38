import { GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto } from '../../proto/index.js';
import type { OnnxModel } from '../../shared/onnx/index.js';

/** Builds a small float32 model from nodes and initializers, for graph-shape tests. */
export function syntheticModel(options: {
  nodes: { op: string; inputs: string[]; output: string; attributes?: Record<string, number> }[];
  initializers: { name: string; dims: number[]; dataType?: number }[];
  inputs: { name: string; dims: (number | string)[]; elemType?: number }[];
  outputs: string[];
}): OnnxModel {
  const tensor = (t: { name: string; dims: number[]; dataType?: number }): TensorProto => {
    const count = t.dims.reduce((a, b) => a * b, 1);
    const values = Float32Array.from({ length: count }, (_, i) => Math.sin(i + 1) / 4);
    return TensorProto.fromPartial({
      name: t.name,
      dims: t.dims.map(BigInt),
      dataType: t.dataType ?? 1,
      rawData: new Uint8Array(values.buffer),
    });
  };
  const valueInfo = (v: { name: string; dims: (number | string)[]; elemType?: number }): ValueInfoProto =>
    ValueInfoProto.fromPartial({
      name: v.name,
      type: {
        tensorType: {
          elemType: v.elemType ?? 1,
          shape: { dim: v.dims.map((d) => (typeof d === 'number' ? { dimValue: BigInt(d) } : { dimParam: d })) },
        },
      },
    });
  const graph = GraphProto.fromPartial({
    name: 'synthetic',
    node: options.nodes.map((n) =>
      NodeProto.fromPartial({
        opType: n.op,
        name: n.output,
        input: n.inputs,
        output: [n.output],
        attribute: Object.entries(n.attributes ?? {}).map(([name, i]) => ({ name, type: 2, i: BigInt(i) })),
      }),
    ),
    initializer: options.initializers.map(tensor),
    input: options.inputs.map(valueInfo),
    output: options.outputs.map((name) => ValueInfoProto.fromPartial({ name })),
  });
  return {
    proto: ModelProto.fromPartial({ irVersion: 8n, opsetImport: [{ domain: '', version: 17n }], graph }),
    baseDir: undefined,
    source: '<synthetic>',
  };
}
