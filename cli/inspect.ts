import { formatBytes, formatTable } from '../shared/index.js';
import { analyzeModel, type InspectReport, inspectReport, loadModel } from '../shared/onnx/index.js';

export interface InspectOptions {
  /** Print exactly one JSON object instead of tables. */
  readonly json?: boolean;
}

/** `gramfuse inspect`: what gramfuse sees in a model. Reads only; writes nothing. */
export async function inspectCommand(path: string, options: InspectOptions, write: (text: string) => void): Promise<void> {
  const report = inspectReport(await analyzeModel(await loadModel(path)));
  write(options.json === true ? `${JSON.stringify(report)}\n` : `${formatInspect(path, report)}\n`);
}

export function formatInspect(path: string, report: InspectReport): string {
  const rowsLabel = (group: InspectReport['gramGroups'][number]): string =>
    group.inputs.map((i) => (i.rows === 'tokens' ? `tokens (masked by ${i.mask ?? 'nothing: no mask input'})` : 'all rows')).join(' + ');
  const parts = [
    `model        ${path}`,
    `fingerprint  ${report.fingerprint}`,
    `parameters   ${report.parameters.count} tensors, ${formatBytes(report.parameters.bytes)}`,
    `task         ${report.task.kind === 'causal-lm' ? `causal LM, vocabulary ${report.task.vocab} (eval: perplexity, token accuracy)` : 'classifier (eval: accuracy, macro-F1)'}`,
    '',
    `Linear layers (${report.linearLayers.length}): solved by RegMean`,
    formatTable(
      ['weight', 'in', 'out', 'stored', 'bias'],
      report.linearLayers.map((l) => [l.weight, l.inDim, l.outDim, l.orientation === 'in_out' ? '[in,out]' : '[out,in]', l.bias ?? '-']),
    ),
    '',
    `Gram groups (${report.gramGroups.length}): one Gram per group, shared by its weights`,
    formatTable(
      ['group', 'dim', 'weights', 'rows', 'input'],
      report.gramGroups.map((g) => [g.id, g.inDim, g.weights.length, rowsLabel(g), g.inputs.map((i) => i.tensor).join(' + ')]),
    ),
    '',
    `Statistics per owner: Grams ${formatBytes(report.statistics.gramBytesFloat32Packed)} (float32, packed), G·W ${formatBytes(report.statistics.rhsBytesFloat32)} (float32)`,
  ];
  if (report.averaged.length > 0) {
    parts.push('', 'Averaged instead of solved:', ...report.averaged.map((n) => `  ${n.tensor}: ${n.reason}`));
  }
  return parts.join('\n');
}
