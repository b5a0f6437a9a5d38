// RegMean computed independently of gramfuse's Gram graph and statistics: the activations every Gram input takes
// are dumped from onnxruntime (withExtraOutputs), the Grams are summed here in float64, and each layer's closed form
// is solved by the float64 reference solver. Weights and activations are decoded here too (float32 or float16, by
// the IEEE formula, not by gramfuse's tables), so a merged model can be checked in any dtype it is written in.
import { buildFeeds, inputRoles, loadTokenizer } from '../../agent/index.js';
import { referenceSolve } from '../../shared/linalg/index.js';
import { weightAsInOut } from '../../shared/merge/index.js';
import { analyzeModel, createSession, loadModel, type OnnxModel, runSession, withExtraOutputs } from '../../shared/onnx/index.js';

/** One IEEE binary16 value from its bits: (−1)^s · 2^(e−15) · (1 + m/1024), subnormals 2^−14 · m/1024. */
export function halfValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 0x1f;
  const m = bits & 0x3ff;
  if (e === 0) return sign * 2 ** -14 * (m / 1024);
  if (e === 31) return m === 0 ? sign * Infinity : NaN;
  return sign * 2 ** (e - 15) * (1 + m / 1024);
}

/** A float32 or float16 initializer's values, decoded here. */
export function initializerValues(model: OnnxModel, name: string): Float64Array {
  const tensor = model.proto.graph!.initializer.find((t) => t.name === name);
  if (tensor?.rawData === undefined) throw new Error(`${name}: not a raw-data initializer of ${model.source}`);
  const raw = tensor.rawData;
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (tensor.dataType === 1) return Float64Array.from({ length: raw.byteLength / 4 }, (_, i) => view.getFloat32(4 * i, true));
  if (tensor.dataType === 10) return Float64Array.from({ length: raw.byteLength / 2 }, (_, i) => halfValue(view.getUint16(2 * i, true)));
  throw new Error(`${name}: element type ${tensor.dataType} is not float32 or float16`);
}

function activationValues(data: unknown): Float64Array {
  if (data instanceof Float32Array) return Float64Array.from(data);
  if (data instanceof Uint16Array) return Float64Array.from(data, halfValue); // onnxruntime-node's float16 tensors
  throw new Error('activation neither float32 nor float16');
}

export interface ReferenceSettings {
  readonly tokenizer: string;
  readonly maxLength: number;
  readonly alpha: number;
}

/** Each owner's float64 Grams (summed here from dumped activations) and rows per Gram group, and its model. */
export interface ReferenceGrams {
  readonly analysis: Awaited<ReturnType<typeof analyzeModel>>;
  readonly owners: readonly { readonly grams: Map<string, { gram: Float64Array; rows: number }>; readonly model: OnnxModel }[];
}

/**
 * Each owner's model and texts (all rows used, one batch each) → its float64 Gram per Gram group (only the groups
 * `only` names, when given: the O(rows·n²) sums run in JavaScript here).
 */
export async function referenceGrams(
  owners: readonly { readonly model: string; readonly texts: readonly string[] }[],
  settings: Omit<ReferenceSettings, 'alpha'>,
  only?: ReadonlySet<string>,
): Promise<ReferenceGrams> {
  const tokenizer = await loadTokenizer(settings.tokenizer, { maxLength: settings.maxLength });
  const analysis = await analyzeModel(await loadModel(owners[0]!.model));
  const groups = analysis.gramGroups.filter((g) => only === undefined || only.has(g.id));
  const inputs = [...new Set(groups.flatMap((g) => g.inputs))];
  const perOwner: { grams: Map<string, { gram: Float64Array; rows: number }>; model: OnnxModel }[] = [];
  for (const owner of owners) {
    const model = await loadModel(owner.model);
    const session = await createSession(withExtraOutputs(model, inputs));
    const grams = new Map(groups.map((g) => [g.id, { gram: new Float64Array(g.inDim * g.inDim), rows: 0 }]));
    try {
      const encoded = owner.texts.map((t) => tokenizer.encode(t));
      const feeds = buildFeeds(encoded, analysis.inputs, inputRoles(analysis.inputs), tokenizer.padId);
      const out = await runSession(session, feeds, owner.model);
      const mask = feeds.attention_mask!.data as BigInt64Array;
      for (const group of groups) {
        const acc = grams.get(group.id)!;
        for (const tensor of group.inputs) {
          const x = activationValues(out[tensor]!.data);
          const rule = analysis.rowRules.get(tensor)!;
          const n = group.inDim;
          for (let r = 0; r < x.length / n; r++) {
            if (rule.rows === 'tokens' && mask[r] === 0n) continue;
            acc.rows++;
            for (let p = 0; p < n; p++) for (let q = 0; q < n; q++) acc.gram[p * n + q]! += x[r * n + p]! * x[r * n + q]!;
          }
        }
      }
    } finally {
      await session.release();
    }
    perOwner.push({ grams, model });
  }
  return { analysis, owners: perOwner };
}

/**
 * The float64 RegMean system of each linear weight of the Grams' groups at `alpha`: A = Σ G̃ᵢ (n×n) and
 * R = Σ G̃ᵢWᵢ (n×out, W as [in, out]), with G̃ = αG + (1−α)diag G of each owner's mean Gram.
 */
export function referenceSystems(
  reference: ReferenceGrams,
  alpha: number,
): Map<string, { readonly n: number; readonly out: number; readonly a: Float64Array; readonly r: Float64Array }> {
  const { analysis, owners: perOwner } = reference;
  const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
  const systems = new Map<string, { n: number; out: number; a: Float64Array; r: Float64Array }>();
  for (const group of analysis.gramGroups) {
    if (!perOwner[0]!.grams.has(group.id)) continue;
    const n = group.inDim;
    const sum = new Float64Array(n * n);
    const tildes = perOwner.map(({ grams }) => {
      const { gram, rows } = grams.get(group.id)!;
      const t = gram.map((v, k) => (k % (n + 1) === 0 ? v : alpha * v) / rows);
      for (let k = 0; k < t.length; k++) sum[k]! += t[k]!;
      return t;
    });
    for (const weight of group.weights) {
      const layer = layers.get(weight)!;
      const m = layer.outDim;
      const rhs = new Float64Array(n * m);
      perOwner.forEach(({ model }, o) => {
        const w = weightAsInOut(initializerValues(model, weight), layer);
        const t = tildes[o]!;
        for (let p = 0; p < n; p++)
          for (let k = 0; k < n; k++) for (let q = 0; q < m; q++) rhs[p * m + q]! += t[p * n + k]! * w[k * m + q]!;
      });
      systems.set(weight, { n, out: m, a: sum, r: rhs });
    }
  }
  return systems;
}

/** For every linear weight of the Grams' groups, the float64 RegMean solution at `alpha` in [in, out] layout. */
export function referenceSolveAt(reference: ReferenceGrams, alpha: number): Map<string, Float64Array> {
  return new Map([...referenceSystems(reference, alpha)].map(([weight, s]) => [weight, referenceSolve(s.a, s.n, s.r, s.out)]));
}

/**
 * Each owner's model and texts (all rows used, one batch each); returns, for every linear weight RegMean solves,
 * the float64 solution in [in, out] layout: (Σ G̃ᵢ)⁻¹ Σ G̃ᵢWᵢ with G̃ = αG + (1−α)diag G of each owner's mean Gram.
 */
export async function referenceRegMean(
  owners: readonly { readonly model: string; readonly texts: readonly string[] }[],
  settings: ReferenceSettings,
): Promise<Map<string, Float64Array>> {
  return referenceSolveAt(await referenceGrams(owners, settings), settings.alpha);
}

/** The merged model's solved weights in [in, out] layout, decoded here. */
export async function mergedWeights(path: string, names: Iterable<string>): Promise<Map<string, Float64Array>> {
  const model = await loadModel(path);
  const analysis = await analyzeModel(model);
  const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
  return new Map([...names].map((name) => [name, weightAsInOut(initializerValues(model, name), layers.get(name)!)]));
}
