import { ValueInfoProto } from '../../proto/index.js';
import { dtypeFromOnnx } from '../dtypes.js';
import { ErrorCode, GramfuseError } from '../errors.js';
import type { GraphIndex } from './graph-index.js';
import type { GramGroup } from './gram-groups.js';
import type { OnnxModel } from './model-io.js';
import { createSession, OrtTensor, runSession, type Tensor } from './runtime.js';

/** A graph input the model expects, as the agent must feed it. */
export interface ModelInput {
  readonly name: string;
  readonly dtype: string;
  /** Each dim: a number when fixed, the symbol's name when dynamic. */
  readonly dims: readonly (number | string)[];
}

/**
 * How the rows of one activation tensor are counted. `tokens`: one row per position of a sequence,
 * masked by `mask` (an attention-mask input) so padding never enters a Gram; `all`: every row kept
 * (pooled vectors, position tables).
 */
export interface RowRule {
  readonly tensor: string;
  readonly rows: 'tokens' | 'all';
  /** The graph input that masks these rows, or null (no mask input for that sequence length). */
  readonly mask: string | null;
}

export function modelInputs(index: GraphIndex): ModelInput[] {
  return index.graph.input
    .filter((input) => !index.initializers.has(input.name ?? ''))
    .map((input) => {
      const tensorType = input.type?.tensorType;
      const name = input.name ?? '';
      if (tensorType === undefined) {
        throw new GramfuseError(ErrorCode.OnnxUnsupportedGraph, `graph input ${name} is not a tensor; gramfuse feeds tensors only`, {
          facts: { input: name },
        });
      }
      return {
        name,
        dtype: dtypeFromOnnx(tensorType.elemType ?? 0, `graph input ${name}`).dtype,
        dims: (tensorType.shape?.dim ?? []).map((d, i) =>
          d.dimValue !== undefined ? Number(d.dimValue) : (d.dimParam ?? `${name}_dim${i}`),
        ),
      };
    });
}

/** Inputs that are attention masks: 2-D `[batch, length]` inputs named like one. */
export function maskInputs(inputs: readonly ModelInput[]): ModelInput[] {
  return inputs.filter((input) => /mask/i.test(input.name) && input.dims.length === 2);
}

const PROBE_BATCH = 3;
const PROBE_LENGTHS = [7, 11, 13, 17, 19];

/** Feeds with distinct batch and sequence lengths, so every tensor's dims say what its rows are. */
export function probeFeeds(inputs: readonly ModelInput[]): { feeds: Record<string, Tensor>; sizes: Map<string | number, number> } {
  const sizes = new Map<string | number, number>();
  const batchSymbol = inputs.find((input) => typeof input.dims[0] === 'string')?.dims[0];
  if (batchSymbol !== undefined) sizes.set(batchSymbol, PROBE_BATCH);
  let next = 0;
  const resolve = (dim: number | string): number => {
    if (typeof dim === 'number') return dim;
    let size = sizes.get(dim);
    if (size === undefined) {
      size = PROBE_LENGTHS[next++] ?? 23 + next * 2;
      sizes.set(dim, size);
    }
    return size;
  };
  const feeds: Record<string, Tensor> = {};
  for (const input of inputs) {
    const dims = input.dims.map(resolve);
    feeds[input.name] = syntheticTensor(input, dims);
  }
  return { feeds, sizes };
}

function syntheticTensor(input: ModelInput, dims: number[]): Tensor {
  const count = dims.reduce((a, b) => a * b, 1);
  const name = input.name.toLowerCase();
  const fill = (value: (i: number) => number): number[] => Array.from({ length: count }, (_, i) => value(i));
  const values = /mask/.test(name)
    ? fill(() => 1)
    : /type/.test(name)
      ? fill(() => 0)
      : /position/.test(name)
        ? fill((i) => i % (dims.at(-1) ?? 1))
        : fill((i) => 1 + (i % 3)); // small ids exist in every vocabulary
  switch (input.dtype) {
    case 'int64':
      return new OrtTensor('int64', BigInt64Array.from(values, BigInt), dims);
    case 'int32':
      return new OrtTensor('int32', Int32Array.from(values), dims);
    case 'bool':
      return new OrtTensor('bool', Uint8Array.from(values.map((v) => (v === 0 ? 0 : 1))), dims);
    case 'float32':
      return new OrtTensor(
        'float32',
        Float32Array.from(values, (v) => (/mask/.test(name) ? v : (v % 13) / 13 - 0.5)),
        dims,
      );
    default:
      throw new GramfuseError(
        ErrorCode.OnnxUnsupportedGraph,
        `graph input ${input.name}: gramfuse cannot synthesize ${input.dtype} inputs for the probe run`,
        {
          facts: { input: input.name, dtype: input.dtype },
        },
      );
  }
}

/** A copy of the model that also outputs the named intermediate tensors (type left to inference). */
export function withExtraOutputs(model: OnnxModel, names: readonly string[]): OnnxModel {
  const graph = model.proto.graph!;
  const existing = new Set(graph.output.map((o) => o.name));
  const extra = names.filter((n) => !existing.has(n)).map((name) => ValueInfoProto.fromPartial({ name }));
  return { ...model, proto: { ...model.proto, graph: { ...graph, output: [...graph.output, ...extra] } } };
}

/**
 * Runs the model once on a tiny synthetic batch and decides, for every Gram group input, whether its
 * rows are tokens (masked) or whole vectors (DESIGN.md §2).
 */
export async function probeRowRules(model: OnnxModel, index: GraphIndex, groups: readonly GramGroup[]): Promise<Map<string, RowRule>> {
  const inputs = modelInputs(index);
  const masks = maskInputs(inputs);
  const tensors = [...new Set(groups.flatMap((g) => g.inputs))];
  const session = await createSession(withExtraOutputs(model, tensors));
  const { feeds, sizes } = probeFeeds(inputs);
  let results;
  try {
    results = await runSession(session, feeds, `${model.source} (probe run)`);
  } finally {
    await session.release();
  }
  const batch = PROBE_BATCH;
  const rules = new Map<string, RowRule>();
  const maskBySize = new Map<number, ModelInput>();
  for (const mask of masks) {
    const length = typeof mask.dims[1] === 'number' ? mask.dims[1] : sizes.get(mask.dims[1]!);
    if (length !== undefined && !maskBySize.has(length)) maskBySize.set(length, mask);
  }
  const sequenceLengths = [...sizes.entries()]
    .filter(([key]) => key !== inputs.find((i) => typeof i.dims[0] === 'string')?.dims[0])
    .map(([, v]) => v);
  for (const tensor of tensors) {
    const value = results[tensor];
    if (value === undefined) throw new GramfuseError(ErrorCode.Internal, `probe run did not return ${tensor}`);
    const lead = value.dims.slice(0, -1).map(Number);
    const product = lead.reduce((a, b) => a * b, 1);
    const tokenLength = sequenceLengths.find((length) => product === batch * length);
    if (tokenLength !== undefined) {
      const layoutOk =
        (lead.length === 2 && lead[0] === batch && lead[1] === tokenLength) || (lead.length === 1 && lead[0] === batch * tokenLength);
      if (!layoutOk) {
        throw new GramfuseError(
          ErrorCode.OnnxUnsupportedGraph,
          `${model.source}: activation ${tensor} has token rows in layout [${lead.join(', ')}, ${value.dims.at(-1)}] (batch ${batch}, length ${tokenLength} in the probe); gramfuse masks only [batch, length, features] or [batch·length, features]`,
          { facts: { tensor, dims: value.dims.join('x') } },
        );
      }
      rules.set(tensor, { tensor, rows: 'tokens', mask: maskBySize.get(tokenLength)?.name ?? null });
    } else {
      rules.set(tensor, { tensor, rows: 'all', mask: null });
    }
  }
  return rules;
}
