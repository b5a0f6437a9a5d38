import type { LayerDiagnostics } from './solve.js';
import type { MergeSpec } from './spec.js';

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
