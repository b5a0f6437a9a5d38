import type { LayerDiagnostics } from './solve.js';
import type { MergeSpec } from './spec.js';

/** One α-auto candidate: its α, its score on the owners' validation data, and what it took. */
export interface AlphaCandidate {
  readonly alpha: number;
  /** The example-weighted mean of the owners' metric (accuracy, or perplexity for a causal LM). */
  readonly score: number;
  readonly owners: readonly { readonly name: string; readonly data: string; readonly examples: number; readonly value: number }[];
  /** Solving every Gram group at this α from the sums (one factorization per group). */
  readonly solveSeconds: number;
  /** SHA-256 of the candidate's merged model as evaluated (solved from the α-free sums). */
  readonly modelSha256: string;
  /** Where the candidate's model was kept (--candidates), else null (removed after scoring). */
  readonly model: string | null;
}

/** α chosen after the statistics: every candidate's score and the one chosen (issue #43). */
export interface AlphaSelection {
  readonly metric: 'accuracy' | 'perplexity';
  /** accuracy: the highest wins; perplexity: the lowest. Ties go to the candidate listed first. */
  readonly better: 'higher' | 'lower';
  readonly chosen: number;
  readonly candidates: readonly AlphaCandidate[];
  readonly seconds: { readonly solve: number; readonly evaluate: number };
  /** How the written model relates to the chosen candidate. */
  readonly note: string;
}

/** The merge report (JSON beside the merged model, and a readable summary). */
export interface MergeReport {
  readonly tool: { readonly name: 'gramfuse'; readonly version: string };
  readonly createdAt: string;
  readonly spec: MergeSpec;
  readonly template: string;
  readonly fingerprint: string;
  readonly base: string | null;
  readonly owners: readonly {
    readonly name: string;
    readonly model: string;
    readonly data: string | null;
    readonly examples: number;
    readonly tokens: number;
    readonly rows: Readonly<Record<string, number>>;
  }[];
  /** A securely aggregated federated job: `owners` holds one entry, their sum; per-owner figures do not exist. */
  readonly privacy?: { readonly secureAggregation: true; readonly owners: readonly string[]; readonly note: string };
  /** --alpha auto: the candidates, their validation scores and the chosen α (`spec.alpha`). */
  readonly alphaSelection?: AlphaSelection;
  /** One entry per Gram group solved by RegMean (empty for the baselines). */
  readonly layers: readonly LayerDiagnostics[];
  /** Parameters averaged (or combined by the baseline) rather than solved. */
  readonly averaged: readonly string[];
  /** aggregate (federated solve only): reading and summing the owners' statistics, not counted in `solve`. */
  readonly seconds: {
    readonly collect: number;
    readonly aggregate?: number;
    readonly solve: number;
    readonly write: number;
    readonly total: number;
  };
  readonly peakRssMb: number;
  readonly outputs: { readonly model: string; readonly modelSha256: string; readonly safetensors: string; readonly report: string };
}

export function formatMergeReport(report: MergeReport): string {
  const lines = [
    `gramfuse ${report.tool.version} merge, ${report.createdAt}`,
    `method ${report.spec.method}${report.spec.method === 'regmean' ? ` (alpha ${report.spec.alpha}, weighting ${report.spec.weighting}, padding ${report.spec.includePadding ? 'included' : 'excluded'})` : ''}`,
    `template ${report.template} (${report.fingerprint.slice(0, 19)}…)${report.base === null ? '' : `, base ${report.base}`}`,
    '',
    'owners:',
    ...report.owners.map((o) => `  ${o.name}: ${o.examples} examples, ${o.tokens} tokens${o.data === null ? '' : ` from ${o.data}`}`),
    ...(report.privacy === undefined ? [] : [`  (${report.privacy.note})`]),
  ];
  const selection = report.alphaSelection;
  if (selection !== undefined) {
    const percent = selection.metric === 'accuracy';
    const show = (v: number): string => (percent ? `${(v * 100).toFixed(2)} %` : v.toFixed(3));
    lines.push(
      '',
      `alpha chosen on the owners' validation data: ${selection.chosen} (${selection.metric}, example-weighted mean over owners, ${selection.better} is better)`,
      `  alpha  ${selection.metric.padStart(11)}  ${selection.candidates[0]!.owners.map((o) => o.name.padStart(11)).join('  ')}  solve s`,
    );
    for (const c of selection.candidates)
      lines.push(
        `  ${String(c.alpha).padEnd(5)}  ${show(c.score).padStart(11)}  ${c.owners.map((o) => show(o.value).padStart(11)).join('  ')}  ${c.solveSeconds.toFixed(2).padStart(7)}${c.alpha === selection.chosen ? '  <- chosen' : ''}`,
      );
    lines.push(
      `  (${selection.candidates.length} candidates: solve ${selection.seconds.solve.toFixed(2)} s, evaluate ${selection.seconds.evaluate.toFixed(1)} s; ${selection.note})`,
    );
  }
  if (report.layers.length > 0) {
    lines.push('', 'RegMean solves (per Gram group):');
    lines.push('  group   dim   rhs       rows   jitter   cond.est   residual   seconds  weights');
    for (const l of report.layers) {
      lines.push(
        `  ${l.group.padEnd(6)} ${String(l.inDim).padStart(4)} ${String(l.rhs).padStart(5)} ${String(l.rows).padStart(10)}  ${l.jitter === 0 ? '      0' : l.jitter.toExponential(0).padStart(7)}  ${l.conditionEstimate.toExponential(2).padStart(9)}  ${l.relativeResidual.toExponential(1).padStart(9)}  ${l.seconds.toFixed(3).padStart(8)}  ${l.weights.join(', ')}`,
      );
    }
  }
  lines.push(
    '',
    `${report.averaged.length} other parameters ${report.spec.method === 'regmean' || report.spec.method === 'average' ? 'averaged' : `combined by ${report.spec.method}`}`,
    `time: collect ${report.seconds.collect.toFixed(1)} s, solve ${report.seconds.solve.toFixed(2)} s, write ${report.seconds.write.toFixed(2)} s, total ${report.seconds.total.toFixed(1)} s; peak RSS ${report.peakRssMb.toFixed(0)} MB`,
    `merged model ${report.outputs.model} (sha256 ${report.outputs.modelSha256.slice(0, 16)}…)`,
    `safetensors ${report.outputs.safetensors}`,
    `report ${report.outputs.report}`,
  );
  return lines.join('\n');
}
