import { ErrorCode, GramfuseError } from '../errors.js';
import { indexGraph } from './graph-index.js';
import { formGramGroups, type GramGroup } from './gram-groups.js';
import { type AnalysisNote, findLinearLayers, type LinearLayer } from './linear-layers.js';
import type { OnnxModel } from './model-io.js';
import { fingerprint, listParameters, type Parameter } from './parameters.js';
import { maskInputs, type ModelInput, modelInputs, probeRowRules, type RowRule } from './probe.js';
import { type ModelTask, modelTask } from './task.js';

/** Everything gramfuse needs to know about a model's structure to collect statistics and merge it. */
export interface ModelAnalysis {
  readonly fingerprint: string;
  readonly inputs: readonly ModelInput[];
  /** Attention-mask inputs (may be empty). */
  readonly masks: readonly string[];
  readonly parameters: readonly Parameter[];
  readonly linearLayers: readonly LinearLayer[];
  readonly gramGroups: readonly GramGroup[];
  /** Row rule per Gram group input tensor. */
  readonly rowRules: ReadonlyMap<string, RowRule>;
  /** Parameters averaged instead of solved, and why. */
  readonly notes: readonly AnalysisNote[];
  /** A causal LM (`[batch, sequence, vocab]` logits) or a classifier, from the graph alone. */
  readonly task: ModelTask;
}

/**
 * Analyses a model: parameters, fingerprint, linear layers, Gram groups, and (by a probe run) row rules.
 * `probe: false` skips the probe run (no onnxruntime session, so no second copy of the weights in memory):
 * the coordinator needs the groups and shapes, never the row rules; `rowRules` is then empty.
 */
export async function analyzeModel(model: OnnxModel, options: { readonly probe?: boolean } = {}): Promise<ModelAnalysis> {
  const graph = model.proto.graph!;
  const index = indexGraph(graph);
  const { layers, notes } = findLinearLayers(index);
  if (layers.length === 0) {
    throw new GramfuseError(
      ErrorCode.OnnxNoLinearLayers,
      `${model.source}: no linear layer found (a MatMul or Gemm whose weight is a rank-2 float initializer); RegMean has nothing to merge in this model`,
      { facts: { path: model.source, nodes: graph.node.length } },
    );
  }
  const gramGroups = formGramGroups(layers);
  const inputs = modelInputs(index);
  const rowRules = options.probe === false ? new Map<string, RowRule>() : await probeRowRules(model, index, gramGroups);
  return {
    fingerprint: fingerprint(model),
    inputs,
    masks: maskInputs(inputs).map((m) => m.name),
    parameters: listParameters(model),
    linearLayers: layers,
    gramGroups,
    rowRules,
    notes,
    task: modelTask(index),
  };
}

/** The `gramfuse inspect --json` object (its shape is a public contract: issue #2). */
export interface InspectReport {
  readonly fingerprint: string;
  /** `causal-lm` (with its vocabulary size) or `classifier`. */
  readonly task: { readonly kind: 'causal-lm' | 'classifier'; readonly vocab?: number };
  readonly parameters: { readonly count: number; readonly bytes: number };
  readonly linearLayers: readonly {
    readonly weight: string;
    readonly input: string;
    readonly inDim: number;
    readonly outDim: number;
    readonly orientation: 'in_out' | 'out_in';
    readonly bias: string | null;
  }[];
  readonly gramGroups: readonly {
    readonly id: string;
    readonly inputs: readonly { readonly tensor: string; readonly rows: 'tokens' | 'all'; readonly mask: string | null }[];
    readonly inDim: number;
    readonly weights: readonly string[];
  }[];
  readonly averaged: readonly AnalysisNote[];
  readonly statistics: { readonly gramBytesFloat32Packed: number; readonly rhsBytesFloat32: number };
}

export function inspectReport(analysis: ModelAnalysis): InspectReport {
  return {
    fingerprint: analysis.fingerprint,
    task: analysis.task.kind === 'causal-lm' ? { kind: 'causal-lm', vocab: analysis.task.vocab } : { kind: 'classifier' },
    parameters: { count: analysis.parameters.length, bytes: analysis.parameters.reduce((sum, p) => sum + p.bytes, 0) },
    linearLayers: analysis.linearLayers.map((layer) => ({
      weight: layer.weight,
      input: layer.uses[0]!.input,
      inDim: layer.inDim,
      outDim: layer.outDim,
      orientation: layer.orientation,
      bias: layer.bias,
    })),
    gramGroups: analysis.gramGroups.map((group) => ({
      id: group.id,
      inputs: group.inputs.map((tensor) => {
        const rule = analysis.rowRules.get(tensor);
        return { tensor, rows: rule?.rows ?? 'all', mask: rule?.mask ?? null };
      }),
      inDim: group.inDim,
      weights: group.weights,
    })),
    averaged: analysis.notes,
    statistics: {
      gramBytesFloat32Packed: analysis.gramGroups.reduce((sum, g) => sum + ((g.inDim * (g.inDim + 1)) / 2) * 4, 0),
      rhsBytesFloat32: analysis.linearLayers.reduce((sum, l) => sum + l.inDim * l.outDim * 4, 0),
    },
  };
}

/** The output head: the last linear layer in graph order, with its bias. */
export function headParameters(analysis: ModelAnalysis): string[] {
  const last = analysis.linearLayers.at(-1);
  if (last === undefined) return [];
  return last.bias === null ? [last.weight] : [last.weight, last.bias];
}
