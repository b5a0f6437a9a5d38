import { formatBytes, formatTable } from '../shared/index.js';
import { GramfuseError } from '../shared/errors.js';
import { analyzeModel, type InspectReport, inspectReport, loadModel } from '../shared/onnx/index.js';
import { readHfCheckpoint } from '../shared/merge/index.js';
import { namesFor } from './hf-export.js';

export interface InspectOptions {
  /** Print exactly one JSON object instead of tables. */
  readonly json?: boolean;
  /** Name the parameters by this checkpoint's tensors (matched by value) instead of the export's structure. */
  readonly hfCheckpoint?: string;
}

/** `inspect`'s report with each parameter's Hugging Face checkpoint name. */
export interface InspectWithNames extends InspectReport {
  readonly checkpoint:
    | {
        readonly source: 'structure' | 'checkpoint';
        readonly prefix: string | null;
        readonly constants: readonly string[];
        readonly parameters: readonly { name: string; checkpointName: string; transposed: boolean; shape: readonly number[] }[];
      }
    | { readonly error: string };
}

/** `gramfuse inspect`: what gramfuse sees in a model. Reads only; writes nothing. */
export async function inspectCommand(path: string, options: InspectOptions, write: (text: string) => void): Promise<void> {
  const model = await loadModel(path);
  const analysis = await analyzeModel(model);
  const report = inspectReport(analysis);
  let checkpoint: InspectWithNames['checkpoint'];
  try {
    const hf = options.hfCheckpoint === undefined ? undefined : await readHfCheckpoint(options.hfCheckpoint);
    const mapping = await namesFor(model, analysis, hf, true);
    checkpoint = {
      source: mapping.source,
      prefix: mapping.prefix,
      constants: mapping.constants,
      parameters: mapping.entries.map((e) => ({ name: e.parameter, checkpointName: e.name, transposed: e.transpose, shape: e.shape })),
    };
  } catch (error) {
    if (options.hfCheckpoint !== undefined || !(error instanceof GramfuseError)) throw error;
    checkpoint = { error: `${error.code}: ${error.message}` }; // the structure alone does not name everything: say so
  }
  const full: InspectWithNames = { ...report, checkpoint };
  write(options.json === true ? `${JSON.stringify(full)}\n` : `${formatInspect(path, full)}\n`);
}

export function formatInspect(path: string, report: InspectWithNames): string {
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
  const names = report.checkpoint;
  if ('error' in names) parts.push('', `Hugging Face checkpoint names: none (${names.error})`);
  else
    parts.push(
      '',
      `Hugging Face checkpoint names (${names.source === 'checkpoint' ? 'matched by value' : "from the export's structure"}${names.prefix === null ? '' : `, wrapper ${names.prefix}. removed`}${names.constants.length === 0 ? '' : `; ${names.constants.length} folded constants left out`})`,
      formatTable(
        ['parameter', 'checkpoint name', 'shape there'],
        names.parameters.map((p) => [p.name, p.checkpointName, `[${p.shape.join(', ')}]${p.transposed ? ' (transposed)' : ''}`]),
      ),
    );
  return parts.join('\n');
}
