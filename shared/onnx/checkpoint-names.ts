import type { Dtype } from '../dtypes.js';
import { ErrorCode, GramfuseError } from '../errors.js';
import { indexGraph } from './graph-index.js';
import type { LinearLayer } from './linear-layers.js';
import type { OnnxModel } from './model-io.js';
import type { Parameter } from './parameters.js';

/** One ONNX parameter as a Hugging Face checkpoint tensor. */
export interface CheckpointEntry {
  /** The ONNX initializer. */
  readonly parameter: string;
  /** The checkpoint's key (a PyTorch state_dict name). */
  readonly name: string;
  /** The checkpoint holds the ONNX value transposed (an exporter's folded `Wᵀ` of an `nn.Linear`). */
  readonly transpose: boolean;
  /** Shape in the checkpoint's layout. */
  readonly shape: readonly number[];
  readonly dtype: Dtype;
}

/** How a model's parameters map to checkpoint tensors. */
export interface CheckpointMapping {
  readonly entries: readonly CheckpointEntry[];
  /** Float initializers that are folded constants, not parameters (scalars without a module name): left out. */
  readonly constants: readonly string[];
  /** The export wrapper's module name stripped from every name (`m` for `m.bert.…`), or null. */
  readonly prefix: string | null;
  /** How the names were found. */
  readonly source: 'structure' | 'checkpoint';
}

/** A PyTorch fully qualified parameter name: dotted identifiers (`bert.encoder.layer.0.output.dense.bias`). */
const QUALIFIED = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$/;

/** A node name that carries its module scope (`/m/bert/encoder/layer.0/attention/self/query/MatMul`). */
const scopeOf = (node: string): string[] | undefined => (node.startsWith('/') ? node.split('/').filter((s) => s !== '') : undefined);

/**
 * The checkpoint names of a model's parameters from the export's structure alone:
 * - a parameter the exporter kept under its module's name (`m.bert.pooler.dense.weight`, dynamo's fully qualified
 *   names) is that tensor, in its stored layout;
 * - a linear weight the exporter renamed (`onnx::MatMul_280`, dynamo's `val_51`: the folded `Wᵀ` of an `nn.Linear`,
 *   stored `[in,out]`) is `<module>.weight` transposed back to `[out,in]`; the module is the MatMul/Gemm node's scope
 *   (`/bert/encoder/layer.0/attention/self/query/MatMul`), or else the name of the bias added right after it;
 * - an export wrapper's module is stripped: the first segment shared by every node scope and every name (`/m/`, `m.`),
 *   or without scopes (dynamo) `m.` before every name;
 * - scalars without a module name are constants the exporter folded, not parameters.
 * Anything else is CHECKPOINT_MISMATCH naming the parameters: never a partial checkpoint.
 */
export function structuralCheckpointNames(
  model: OnnxModel,
  analysis: { readonly parameters: readonly Parameter[]; readonly linearLayers: readonly LinearLayer[] },
): CheckpointMapping {
  const graph = model.proto.graph!;
  const index = indexGraph(graph);
  const linear = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
  const qualified = analysis.parameters.filter((p) => QUALIFIED.test(p.name)).map((p) => p.name);
  // The wrapper: one first segment shared by every scoped node and every qualified name.
  const scopes = graph.node.map((n) => scopeOf(n.name ?? '')).filter((s): s is string[] => s !== undefined && s.length > 1);
  const first = scopes[0]?.[0];
  const sharedBy = (segment: string | undefined): boolean =>
    segment !== undefined && qualified.length > 0 && qualified.every((n) => n.startsWith(`${segment}.`));
  // Without scopes (dynamo) only the wrapper name `m` is stripped: a tied causal LM's names all start `model.`.
  const prefix = scopes.length > 0 ? (scopes.every((s) => s[0] === first) && sharedBy(first) ? first! : null) : sharedBy('m') ? 'm' : null;
  const strip = (name: string): string => (prefix !== null && name.startsWith(`${prefix}.`) ? name.slice(prefix.length + 1) : name);
  const moduleOfScope = (segments: readonly string[]): string => {
    const module = segments.slice(0, -1); // the last segment is the op (`MatMul`)
    return (prefix !== null && module[0] === prefix ? module.slice(1) : module).join('.');
  };

  const entries: CheckpointEntry[] = [];
  const constants: string[] = [];
  const unmapped: string[] = [];
  for (const p of analysis.parameters) {
    if (QUALIFIED.test(p.name)) {
      entries.push({ parameter: p.name, name: strip(p.name), transpose: false, shape: p.shape, dtype: p.dtype });
      continue;
    }
    const layer = linear.get(p.name);
    if (layer !== undefined) {
      const module = linearModule(layer, index, moduleOfScope, strip);
      if (module !== undefined) {
        const transpose = layer.orientation === 'in_out';
        entries.push({
          parameter: p.name,
          name: `${module}.weight`,
          transpose,
          shape: transpose ? [...p.shape].reverse() : p.shape,
          dtype: p.dtype,
        });
        continue;
      }
    }
    if (p.shape.reduce((a, b) => a * b, 1) <= 1) constants.push(p.name);
    else unmapped.push(p.name);
  }
  if (unmapped.length > 0)
    throw new GramfuseError(
      ErrorCode.CheckpointMismatch,
      `${model.source}: ${unmapped.length} parameters have no checkpoint name in the export's structure (${unmapped.slice(0, 5).join(', ')}${
        unmapped.length > 5 ? ', …' : ''
      }); give the checkpoint they came from (--hf-checkpoint DIR) to match them by value`,
      { facts: { unmapped: unmapped.length, first: unmapped[0]! } },
    );
  checkUnique(entries, model.source);
  return { entries, constants, prefix, source: 'structure' };
}

/** The `nn.Linear` module a renamed weight belongs to: its node's scope, or the name of its bias. */
function linearModule(
  layer: LinearLayer,
  index: ReturnType<typeof indexGraph>,
  moduleOfScope: (segments: readonly string[]) => string,
  strip: (name: string) => string,
): string | undefined {
  const modules = new Set<string>();
  for (const use of layer.uses) {
    const segments = scopeOf(use.node);
    if (segments !== undefined && segments.length > 1) modules.add(moduleOfScope(segments));
  }
  if (modules.size === 1) return [...modules][0];
  if (modules.size > 1) return undefined; // one weight applied in several modules: no single name
  if (layer.bias !== null && QUALIFIED.test(layer.bias) && layer.bias.endsWith('.bias')) return strip(layer.bias).slice(0, -'.bias'.length);
  // A MatMul whose output goes straight into an Add with a named bias (dynamo keeps bias names, not weight names).
  for (const use of layer.uses) {
    const node = index.graph.node.find((n) => n.name === use.node);
    for (const consumer of index.consumers.get(node?.output[0] ?? '') ?? []) {
      if (consumer.opType !== 'Add') continue;
      const bias = consumer.input.find((i) => index.initializers.has(i) && QUALIFIED.test(i) && i.endsWith('.bias'));
      if (bias !== undefined) return strip(bias).slice(0, -'.bias'.length);
    }
  }
  return undefined;
}

export function checkUnique(entries: readonly CheckpointEntry[], source: string): void {
  const seen = new Map<string, string>();
  for (const e of entries) {
    const other = seen.get(e.name);
    if (other !== undefined)
      throw new GramfuseError(
        ErrorCode.CheckpointMismatch,
        `${source}: parameters ${other} and ${e.parameter} both map to checkpoint tensor ${e.name}`,
        {
          facts: { name: e.name },
        },
      );
    seen.set(e.name, e.parameter);
  }
}
