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

/**
 * Each owner's model and texts (all rows used, one batch each); returns, for every linear weight RegMean solves,
 * the float64 solution in [in, out] layout: (Σ G̃ᵢ)⁻¹ Σ G̃ᵢWᵢ with G̃ = αG + (1−α)diag G of each owner's mean Gram.
 */
export async function referenceRegMean(
  owners: readonly { readonly model: string; readonly texts: readonly string[] }[],
  settings: ReferenceSettings,
): Promise<Map<string, Float64Array>> {
  const tokenizer = await loadTokenizer(settings.tokenizer, { maxLength: settings.maxLength });
  const analysis = await analyzeModel(await loadModel(owners[0]!.model));
  const inputs = [...new Set(analysis.gramGroups.flatMap((g) => g.inputs))];
  const perOwner: { grams: Map<string, { gram: Float64Array; rows: number }>; model: OnnxModel }[] = [];
  for (const owner of owners) {
    const model = await loadModel(owner.model);
    const session = await createSession(withExtraOutputs(model, inputs));
    const grams = new Map(analysis.gramGroups.map((g) => [g.id, { gram: new Float64Array(g.inDim * g.inDim), rows: 0 }]));
    try {
      const encoded = owner.texts.map((t) => tokenizer.encode(t));
      const feeds = buildFeeds(encoded, analysis.inputs, inputRoles(analysis.inputs), tokenizer.padId);
      const out = await runSession(session, feeds, owner.model);
      const mask = feeds.attention_mask!.data as BigInt64Array;
      for (const group of analysis.gramGroups) {
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
  const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
  const solutions = new Map<string, Float64Array>();
  for (const group of analysis.gramGroups) {
    const n = group.inDim;
    const sum = new Float64Array(n * n);
    const tildes = perOwner.map(({ grams }) => {
      const { gram, rows } = grams.get(group.id)!;
      const t = gram.map((v, k) => (k % (n + 1) === 0 ? v : settings.alpha * v) / rows);
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
      solutions.set(weight, referenceSolve(sum, n, rhs, m));
    }
  }
  return solutions;
}

/** The merged model's solved weights in [in, out] layout, decoded here. */
export async function mergedWeights(path: string, names: Iterable<string>): Promise<Map<string, Float64Array>> {
  const model = await loadModel(path);
  const analysis = await analyzeModel(model);
  const layers = new Map(analysis.linearLayers.map((l) => [l.weight, l]));
  return new Map([...names].map((name) => [name, weightAsInOut(initializerValues(model, name), layers.get(name)!)]));
}
