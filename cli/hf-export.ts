// `--hf-out`: a merged (or any) ONNX model handed back as a Hugging Face checkpoint directory. The names come from a
// checkpoint matched by value (--hf-checkpoint, against the model that holds the checkpoint's own values) or from
// the export's structure; the values from the model being exported.
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';

import { ErrorCode, fileError, GramfuseError } from '../shared/errors.js';
import { isHfDirectory } from '../shared/hf/index.js';
import {
  alignWithCheckpoint,
  type HfCheckpoint,
  matchCheckpointByValue,
  type MergeReport,
  readHfCheckpoint,
  writeHfCheckpoint,
} from '../shared/merge/index.js';
import {
  analyzeModel,
  type CheckpointMapping,
  isExternal,
  loadModel,
  type ModelAnalysis,
  type OnnxModel,
  saveModel,
  serializeModel,
  structuralCheckpointNames,
  tensorBytes,
  tensorWithBytes,
} from '../shared/onnx/index.js';

export interface HfExportOptions {
  /** The ONNX model whose parameter values are written. */
  readonly model: string;
  readonly out: string;
  /** A checkpoint directory: its names, layouts, dtypes and config.json. */
  readonly checkpoint?: string;
  /**
   * With a checkpoint: the ONNX export of it (its values equal the checkpoint's), to match names by value — for a
   * merge, an owner's model; or the word `structure`: names from the export's structure, checked against the checkpoint's keys
   * and shapes (a merged model downloaded without its owners' exports). @default `model` itself (an unmerged export)
   */
  readonly namesFrom?: string;
  /** Tokenizer files copied beside the weights (tokenizer.json; its tokenizer_config.json and special_tokens_map.json too, when beside it). */
  readonly tokenizer?: string;
  /** The merge this checkpoint is the result of, for the model card. */
  readonly report?: MergeReport;
  /** What the card says about where the statistics' digests and the ledger are. */
  readonly provenance?: readonly string[];
}

export interface HfExportResult {
  readonly out: string;
  readonly files: readonly string[];
  readonly bytes: number;
  readonly mapping: CheckpointMapping;
}

/**
 * The names of `named`'s parameters: from its structure (checked against `hf`'s keys and shapes when one is given),
 * or, with `byValue`, matched to `hf`'s tensors by value (`named` then holds the checkpoint's own values).
 */
export async function namesFor(
  named: OnnxModel,
  analysis: Pick<ModelAnalysis, 'parameters' | 'linearLayers'>,
  hf: HfCheckpoint | undefined,
  byValue: boolean,
): Promise<CheckpointMapping> {
  if (hf === undefined) return structuralCheckpointNames(named, analysis);
  if (!byValue) return alignWithCheckpoint(structuralCheckpointNames(named, analysis), hf, named.source);
  return matchCheckpointByValue(named, analysis, hf);
}

/** `namesFor` from paths: by value against `namesFrom`, or the word `structure`: from `model`'s structure. */
async function namesFromPaths(model: string, hf: HfCheckpoint | undefined, namesFrom: string): Promise<CheckpointMapping> {
  const named = await loadModel(namesFrom === 'structure' ? model : namesFrom);
  return namesFor(named, await analyzeModel(named, { probe: false }), hf, namesFrom !== 'structure');
}

/** The names a model's parameters take in a checkpoint directory (or from its structure without one). */
export async function checkpointMapping(model: string, checkpoint: string | undefined, namesFrom: string): Promise<CheckpointMapping> {
  return namesFromPaths(model, checkpoint === undefined ? undefined : await readHfCheckpoint(checkpoint), namesFrom);
}

/** What an export needs before the model to export exists: the names (checked now) and the checkpoint's config. */
export interface PreparedHfExport {
  readonly mapping: CheckpointMapping;
  readonly config: string | undefined;
}

/**
 * Checks an export before a long merge runs: the output directory is new or empty, the names map completely.
 * `template` is a model of the same structure as the one that will be exported.
 */
export async function prepareHfExport(
  options: Omit<HfExportOptions, 'model'> & {
    readonly template: string;
    /** Refuse without a checkpoint (a merge: a directory without config.json is not loadable by transformers). */
    readonly requireCheckpoint?: boolean;
  },
): Promise<PreparedHfExport> {
  const existing = await readdir(options.out).catch(() => []);
  if (existing.length > 0)
    throw new GramfuseError(ErrorCode.InvalidArgument, `--hf-out ${options.out}: the directory is not empty; name a new directory`, {
      facts: { path: options.out },
    });
  if (options.requireCheckpoint === true && options.checkpoint === undefined)
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `--hf-out ${options.out}: the models are ONNX files, so there is no config.json (nor names and dtypes) to write a checkpoint transformers loads; pass --hf-checkpoint DIR (the Hugging Face checkpoint an owner's model was exported from), or give the owners' Hugging Face directories as --model`,
      { facts: { path: options.out, flag: 'hf-checkpoint' } },
    );
  const hf = options.checkpoint === undefined ? undefined : await readHfCheckpoint(options.checkpoint);
  return { mapping: await namesFromPaths(options.template, hf, options.namesFrom ?? options.template), config: hf?.config };
}

export async function exportHfCheckpoint(options: HfExportOptions, prepared?: PreparedHfExport): Promise<HfExportResult> {
  const model = await loadModel(options.model);
  const { mapping, config } = prepared ?? (await prepareHfExport({ ...options, template: options.model }));
  const copy: string[] = [];
  if (options.tokenizer !== undefined) {
    copy.push(options.tokenizer);
    for (const file of ['tokenizer_config.json', 'special_tokens_map.json']) {
      const beside = join(dirname(options.tokenizer), file);
      if (existsSync(beside)) copy.push(beside);
    }
  }
  // The checkpoint's generation settings travel with its config (a merged causal LM generates as its owners' did).
  const generation = options.checkpoint === undefined ? undefined : join(options.checkpoint, 'generation_config.json');
  if (generation !== undefined && existsSync(generation)) copy.push(generation);
  const written = await writeHfCheckpoint(options.out, model, mapping, {
    ...(config === undefined ? {} : { config }),
    copy,
    card: modelCard(options, mapping, config !== undefined),
  });
  return { out: options.out, files: written.files, bytes: written.bytes, mapping };
}

/** README.md of the checkpoint: what it is, how it was made, from what. */
function modelCard(options: HfExportOptions, mapping: CheckpointMapping, hasConfig: boolean): string {
  const r = options.report;
  const lines = [
    '---',
    'library_name: transformers',
    'tags:',
    '- gramfuse',
    ...(r === undefined ? [] : ['- model-merging', `- ${r.spec.method}`]),
    '---',
    '',
  ];
  if (r === undefined) {
    lines.push(`# ${options.model}`, '', `The parameters of \`${options.model}\` as a Hugging Face checkpoint, written by gramfuse.`);
  } else {
    lines.push(
      '# Merged model',
      '',
      `Merged by gramfuse ${r.tool.version} on ${r.createdAt} with **${r.spec.method}**` +
        (r.spec.method === 'regmean'
          ? ` (α = ${r.spec.alpha}, weighting ${r.spec.weighting}, padding ${r.spec.includePadding ? 'included' : 'excluded'})`
          : '') +
        ": from per-layer statistics of each owner's data (Gram matrices, token counts, averaged parameters), never the data itself.",
      '',
      `Template fingerprint \`${r.fingerprint}\`; merged ONNX SHA-256 \`${r.outputs.modelSha256}\`.`,
      '',
      '| owner | examples | tokens | rows per Gram group (min–max) |',
      '| --- | --- | --- | --- |',
      ...r.owners.map((o) => {
        const rows = Object.values(o.rows);
        const range = rows.length === 0 ? '–' : `${Math.min(...rows)}–${Math.max(...rows)}`;
        return `| ${o.name} | ${o.examples} | ${o.tokens} | ${range} |`;
      }),
      '',
      `${r.layers.length} Gram groups solved, ${r.averaged.length} parameters averaged.`,
    );
  }
  lines.push(
    '',
    `Names: ${mapping.source === 'checkpoint' ? 'matched by value to the checkpoint given (--hf-checkpoint)' : "from the ONNX export's structure"}` +
      `${mapping.prefix === null ? '' : ` (export wrapper \`${mapping.prefix}.\` removed)`}; ${mapping.entries.length} tensors` +
      `${mapping.constants.length === 0 ? '' : `, ${mapping.constants.length} folded constants left out`}.` +
      (hasConfig ? '' : " No config.json was given (pass --hf-checkpoint): add the base model's before from_pretrained."),
    ...(options.provenance ?? []).map((line) => `\n${line}`),
    '',
  );
  return lines.join('\n');
}

/**
 * What `merge --hf-out` writes from, by the template's kind: a Hugging Face directory is its own checkpoint (names,
 * layouts, dtypes, config.json, tokenizer files: the merged directory has the input's shape); an ONNX template needs
 * --hf-checkpoint, refused before merging when absent.
 */
export async function mergeHfOutput(
  template: string,
  flags: { readonly hfOut: string; readonly hfCheckpoint?: string; readonly hfModel?: string; readonly tokenizer?: string },
): Promise<{ readonly options: Omit<HfExportOptions, 'model'>; readonly prepared: PreparedHfExport }> {
  const hfTemplate = await isHfDirectory(template);
  const checkpoint = flags.hfCheckpoint ?? (hfTemplate ? template : undefined);
  const tokenizer =
    flags.tokenizer ?? (hfTemplate && existsSync(join(template, 'tokenizer.json')) ? join(template, 'tokenizer.json') : undefined);
  const options = {
    out: flags.hfOut,
    ...(checkpoint === undefined ? {} : { checkpoint, namesFrom: flags.hfModel ?? template }),
    ...(tokenizer === undefined ? {} : { tokenizer }),
  };
  return { options, prepared: await prepareHfExport({ ...options, template, requireCheckpoint: true }) };
}

/** `export --onnx-out`: a model (an HF directory built, or an .onnx) written as one ONNX file (a side file past 2 GB). */
export async function exportOnnx(model: string, out: string): Promise<{ readonly out: string; readonly initializers: number }> {
  const loaded = await loadModel(model);
  await saveModel(loaded, out);
  return { out, initializers: loaded.proto.graph!.initializer.length };
}

/**
 * A job template's bytes for `job create --template`: an .onnx file as it is, a Hugging Face directory built with
 * its weights inline (a template too large for one message goes by path: --template-on-coordinator).
 */
export async function templateBytes(path: string): Promise<Uint8Array> {
  if (!(await isHfDirectory(path)))
    return readFile(path).catch((error: unknown) => {
      throw fileError(error, path, 'reading the template');
    });
  const model = await loadModel(path);
  const graph = model.proto.graph!;
  const initializer = graph.initializer.map((t) => (isExternal(t) ? tensorWithBytes(t, tensorBytes(model, t)) : t));
  return serializeModel({ ...model, proto: { ...model.proto, graph: { ...graph, initializer } } });
}
