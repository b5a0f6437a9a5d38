import { mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { collectInWorker, ownerFromModelPath, type Progress, writeStatistics } from '../agent/index.js';
import { ensureDirectoryFor, ErrorCode, GramfuseError, packageVersion, writeFileAtomic } from '../shared/index.js';
import { createOrtSolver } from '../shared/linalg/index.js';
import { type AlphaValidationOptions, scoreAlphaCandidates } from './alpha-auto.js';
import { parseStatisticId } from '../shared/federation/index.js';
import {
  alphaAfterStatistics,
  type AlphaSelection,
  type Contribution,
  contributionTensors,
  defaultLambda,
  DisclosurePolicy,
  formatMergeReport,
  headIsAveraged,
  type LayerDiagnostics,
  mergedMetadata,
  type MergeReport,
  needsBase,
  planDisclosure,
  verifyBundle,
  MergeSpec,
  runMergePipeline,
  StatisticDirectory,
  type StatisticSource,
  statisticsAtAlpha,
  sumMaps,
  tiesAgree,
  tiesElect,
  tiesFinish,
  tiesTrim,
} from '../shared/merge/index.js';
import {
  analyzeModel,
  fingerprint,
  headParameters,
  listParameters,
  loadModel,
  type ModelAnalysis,
  type OnnxModel,
  readParameterValues,
} from '../shared/onnx/index.js';

/** Everything `gramfuse merge` needs: N models, each with its owner's data, one tokenizer. */
export interface LocalMergeOptions {
  readonly models: readonly string[];
  /** One data file per model (required for RegMean; ignored by the weight-only baselines). */
  readonly data: readonly string[];
  /** Statistics bundles collected by agents (`gramfuse agent collect`): owners who are not run here. */
  readonly bundles?: readonly string[];
  /** The model whose graph the merged model takes; default the first --model. */
  readonly template?: string;
  readonly tokenizer?: string;
  readonly spec: MergeSpec;
  readonly base?: string;
  readonly out: string;
  /** Default: `<out without .onnx>.report.json`. */
  readonly report?: string;
  readonly maxExamples?: number;
  readonly seed?: number;
  readonly batchSize?: number;
  readonly maxLength?: number;
  readonly textField?: string;
  readonly threads?: number;
  /** Bytes one collection pass's accumulators may take. @default half of the free memory */
  readonly memoryBudget?: number;
  readonly onCollect?: (owner: string, progress: Progress) => void;
  readonly onSolve?: (done: number, total: number, layer: LayerDiagnostics) => void;
  /**
   * α chosen after the statistics (`spec.alphaCandidates`, `--alpha auto`): each owner's validation data, one file per
   * --model, on which every candidate is scored. Required then, refused otherwise.
   */
  readonly validation?: AlphaValidationOptions;
  /** `--alpha auto`: keep each candidate's merged model here (alpha-<α>.onnx). @default removed after scoring */
  readonly candidatesDir?: string;
  readonly onCandidate?: (done: number, total: number) => void;
}

export interface LocalMergeResult {
  readonly report: MergeReport;
  readonly reportText: string;
}

/** Owner names from model paths: the folder name for `<org>/model.onnx`, else the file name. */
export function ownerNames(paths: readonly string[]): string[] {
  const names = paths.map(ownerFromModelPath);
  return names.map((name, i) => (names.indexOf(name) === i ? name : `${name}-${i}`));
}

/** Local mode: the agent's collection and the coordinator's aggregation and solve, in one process. */
export async function runLocalMerge(options: LocalMergeOptions): Promise<LocalMergeResult> {
  const started = performance.now();
  const spec = options.spec;
  const bundles = options.bundles ?? [];
  if (options.models.length === 0 && bundles.length === 0) {
    throw new GramfuseError(ErrorCode.InvalidArgument, '--model: give at least one model (or --bundle)', { facts: { flag: 'model' } });
  }
  const templatePath = options.template ?? options.models[0];
  if (templatePath === undefined) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      "--template: merging bundles alone needs the model whose graph the result takes (any owner's model)",
      {
        facts: { flag: 'template' },
      },
    );
  }
  if (spec.method === 'regmean' && options.data.length === 0 && options.models.length > 0) {
    throw new GramfuseError(ErrorCode.InvalidArgument, "--data: RegMean needs one data file per --model (the owner's private text)", {
      facts: { flag: 'data' },
    });
  }
  if (options.data.length > 0 && options.data.length !== options.models.length) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `--data: ${options.data.length} data files for ${options.models.length} models; give one --data after each --model`,
      {
        facts: { models: options.models.length, data: options.data.length },
      },
    );
  }
  if (needsBase(spec.method) && options.base === undefined) {
    throw new GramfuseError(ErrorCode.InvalidArgument, `--base: ${spec.method} needs the base model the owners fine-tuned from`, {
      facts: { flag: 'base', method: spec.method },
    });
  }
  if (spec.method === 'regmean' && options.models.length > 0 && options.tokenizer === undefined) {
    throw new GramfuseError(ErrorCode.InvalidArgument, '--tokenizer: RegMean runs the models on text and needs a tokenizer.json', {
      facts: { flag: 'tokenizer' },
    });
  }
  checkAlphaAuto(options);
  const reportPath = options.report ?? `${options.out.replace(/\.onnx$/, '')}.report.json`;
  const safetensorsPath = `${options.out.replace(/\.onnx$/, '')}.safetensors`;
  await ensureDirectoryFor(options.out);
  await ensureDirectoryFor(reportPath);

  const names = ownerNames(options.models);
  const template = await loadModel(templatePath);
  const analysis = await analyzeModel(template);
  const models: OnnxModel[] = [];
  for (const path of options.models) models.push(path === templatePath ? template : await loadModel(path));
  const checkFingerprint = (model: OnnxModel, flag: string): void => {
    const found = fingerprint(model);
    if (found !== analysis.fingerprint) {
      throw new GramfuseError(
        ErrorCode.FingerprintMismatch,
        `${flag} ${model.source}: fingerprint ${found} differs from ${templatePath}'s ${analysis.fingerprint}; RegMean merges models fine-tuned from one base and exported alike (check with gramfuse inspect)`,
        { facts: { model: model.source, found, expected: analysis.fingerprint } },
      );
    }
  };
  models.forEach((m) => m !== template && checkFingerprint(m, '--model'));
  let baseValues: Map<string, Float64Array> | undefined;
  if (options.base !== undefined) {
    const base = await loadModel(options.base);
    checkFingerprint(base, '--base');
    baseValues = new Map(listParameters(base).map((p) => [p.name, readParameterValues(base, p.name)]));
  }

  const averagedHead = new Set(headIsAveraged(spec) ? headParameters(analysis) : []);
  // Each owner's statistics go to a scratch directory beside the output, one owner in memory at a time; the
  // one merge pipeline (the coordinator's too) reads them back from there.
  const scratch = await StatisticDirectory.create(dirname(options.out));
  // What this merge wrote (a failure removes these, and never a file it did not write).
  const written: string[] = [];
  try {
    const owners: MergeReport['owners'][number][] = [];
    let collectSeconds = 0;
    const tiesTrimmed: Map<string, Float64Array>[] = [];
    for (const [i, model] of models.entries()) {
      const owner = names[i]!;
      const dataPath = options.data[i];
      let collected: Awaited<ReturnType<typeof collectInWorker>> | undefined;
      if (spec.method === 'ties') {
        // Round 1 needs each owner's trimmed task vector; only the averaged head goes through the statistics.
        const theta = new Map(listParameters(model).map((p) => [p.name, readParameterValues(model, p.name)]));
        const head = new Map([...theta].filter(([name]) => averagedHead.has(name)));
        for (const name of head.keys()) theta.delete(name);
        tiesTrimmed.push(tiesTrim(theta, baseValues!, spec.tiesK));
        await addOwner(scratch, analysis, spec, {
          owner,
          fingerprint: analysis.fingerprint,
          weight: 1,
          examples: 0,
          tokens: 0,
          rows: {},
          grams: new Map(),
          gramTimesWeight: new Map(),
          parameters: head,
        });
      } else {
        // The agent's own statistics writer, as for a bundle: float64, written where the pipeline reads them.
        const plan = planDisclosure(owner, analysis, spec, 'float64', DisclosurePolicy.parse({}));
        const statisticsPath = scratch.statisticsPath(owner);
        await mkdir(dirname(statisticsPath), { recursive: true });
        if (spec.method === 'regmean') {
          // The agent's own collection job, in its worker thread: one implementation for both modes.
          collected = await collectInWorker(
            {
              owner,
              // The template's analysis serves every owner: their fingerprints were checked against it above.
              analysis,
              plan,
              statisticsPath,
              modelPath: options.models[i]!,
              dataPath: dataPath!,
              tokenizerPath: options.tokenizer!,
              spec,
              maxLength: options.maxLength ?? 128,
              batchSize: options.batchSize ?? 32,
              seed: options.seed ?? 1,
              textField: options.textField ?? 'text',
              device: 'cpu',
              ...(options.maxExamples === undefined ? {} : { maxExamples: options.maxExamples }),
              ...(options.threads === undefined ? {} : { threads: options.threads }),
              ...(options.memoryBudget === undefined ? {} : { memoryBudget: options.memoryBudget }),
            },
            (p) => options.onCollect?.(owner, p),
          );
          collectSeconds += collected.seconds;
        } else {
          // No data is read for the baselines: the parameters (and counts) only.
          await writeStatistics(statisticsPath, plan, model, analysis, spec, [], () => {
            throw new GramfuseError(ErrorCode.Internal, `${spec.method} collects no Gram statistics`);
          });
        }
        await scratch.addSafetensors(plan, statisticsPath);
      }
      owners.push({
        name: owner,
        model: model.source,
        data: dataPath ?? null,
        examples: collected?.statistics.examples ?? 0,
        tokens: collected?.statistics.tokens ?? 0,
        rows: collected?.statistics.rows ?? {},
      });
    }
    for (const path of bundles) {
      if (spec.method === 'ties') {
        throw new GramfuseError(
          ErrorCode.InvalidArgument,
          '--bundle: TIES needs a second round with each owner; merge its models locally or federate',
          {
            facts: { flag: 'bundle' },
          },
        );
      }
      // Verified a slice at a time, then read in place by the pipeline: a bundle is never held in memory whole.
      const { manifest, statisticsPath } = await verifyBundle(path);
      const b = manifest.plan.spec;
      if (
        b.method !== spec.method ||
        b.alpha !== spec.alpha ||
        b.weighting !== spec.weighting ||
        b.includePadding !== spec.includePadding
      ) {
        throw new GramfuseError(
          ErrorCode.InvalidArgument,
          `--bundle ${path}: collected for ${b.method} (alpha ${b.alpha}, weighting ${b.weighting}, padding ${b.includePadding ? 'included' : 'excluded'}), but this merge is ${spec.method} (alpha ${spec.alpha}, weighting ${spec.weighting}, padding ${spec.includePadding ? 'included' : 'excluded'}); pass the same settings`,
          { facts: { bundle: path } },
        );
      }
      if (manifest.plan.fingerprint !== analysis.fingerprint) {
        throw new GramfuseError(
          ErrorCode.FingerprintMismatch,
          `--bundle ${path}: collected on a model with fingerprint ${manifest.plan.fingerprint}, the template's is ${analysis.fingerprint}`,
          { facts: { bundle: path, found: manifest.plan.fingerprint, expected: analysis.fingerprint } },
        );
      }
      await scratch.addSafetensors(manifest.plan, statisticsPath);
      const rows: Record<string, number> = {};
      for (const s of manifest.plan.statistics) {
        const id = parseStatisticId(s.id);
        if (id.kind === 'gram' && s.rows !== undefined) rows[id.group] = s.rows;
      }
      owners.push({
        name: manifest.plan.owner,
        model: `bundle ${path}`,
        data: null,
        examples: Number(manifest.settings.examples ?? 0),
        tokens: Number(manifest.settings.tokens ?? 0),
        rows,
      });
    }

    // TIES round 2 (agreeing entries and their counts), computed here; the pipeline writes the result.
    let precomputed: Map<string, Float64Array> | undefined;
    if (spec.method === 'ties') {
      const elected = tiesElect(sumMaps(tiesTrimmed));
      const agreed = tiesTrimmed.map((t) => tiesAgree(t, elected));
      const tiesBase = new Map([...baseValues!].filter(([name]) => !averagedHead.has(name)));
      precomputed = tiesFinish(
        tiesBase,
        sumMaps(agreed.map((a) => a.values)),
        sumMaps(agreed.map((a) => a.counts)),
        spec.lambda ?? defaultLambda('ties'),
      );
    }
    // α-auto: every candidate solved from the α-free sums and scored on the owners' validation data; the result is
    // then the plain merge at the chosen α, from each owner's plain statistics at that α rebuilt from its α-free ones.
    let source: StatisticSource = scratch;
    let workDir = scratch.workDir;
    let mergeSpec = spec;
    let alphaSelection: AlphaSelection | undefined;
    const createSolver = () => createOrtSolver(options.threads === undefined ? {} : { threads: options.threads });
    if (alphaAfterStatistics(spec)) {
      alphaSelection = await scoreAlphaCandidates({
        source: scratch,
        analysis,
        spec,
        template,
        templatePath,
        owners: names,
        validation: options.validation!,
        scratch: join(scratch.root, 'alpha'),
        ...(options.candidatesDir === undefined ? {} : { candidatesDir: options.candidatesDir }),
        tokenizer: options.tokenizer!,
        seed: options.seed ?? 1,
        maxLength: options.maxLength ?? 128,
        textField: options.textField ?? 'text',
        ...(options.threads === undefined ? {} : { threads: options.threads }),
        createSolver,
        ...(options.onCandidate === undefined ? {} : { onCandidate: options.onCandidate }),
      });
      const { alphaCandidates: _grid, ...fixed } = spec;
      mergeSpec = MergeSpec.parse({ ...fixed, alpha: alphaSelection.chosen });
      const plain = await StatisticDirectory.create(scratch.root);
      for (const [i, model] of models.entries()) {
        const plan = planDisclosure(names[i]!, analysis, mergeSpec, 'float64', DisclosurePolicy.parse({}));
        await plain.add(plan, await statisticsAtAlpha(scratch, plan, model, analysis));
      }
      source = plain;
      workDir = plain.workDir;
    }
    const outcome = await runMergePipeline({
      source,
      analysis,
      spec: mergeSpec,
      templatePath,
      workDir,
      modelPath: options.out,
      safetensorsPath,
      metadata: mergedMetadata(spec, analysis.fingerprint),
      createSolver,
      ...(baseValues === undefined ? {} : { base: (name: string) => baseValues.get(name)! }),
      averaged: averagedHead,
      ...(precomputed === undefined ? {} : { precomputed }),
      onProgress: (p) => {
        if (p.phase === 'solve' && p.layer !== undefined) options.onSolve?.(p.done, p.total, p.layer);
        if (p.phase === 'write') written.push(p.done === 1 ? options.out : safetensorsPath);
      },
    });
    const { seconds } = outcome;
    const report: MergeReport = {
      tool: { name: 'gramfuse', version: packageVersion() },
      createdAt: new Date().toISOString(),
      spec: alphaSelection === undefined ? spec : { ...mergeSpec, alphaCandidates: spec.alphaCandidates },
      template: templatePath,
      fingerprint: analysis.fingerprint,
      base: options.base ?? null,
      owners,
      ...(alphaSelection === undefined ? {} : { alphaSelection }),
      layers: outcome.layers,
      averaged: outcome.averaged,
      seconds: {
        collect: collectSeconds,
        aggregate: seconds.aggregate,
        solve: seconds.solve + seconds.average,
        write: seconds.write,
        total: (performance.now() - started) / 1000,
      },
      peakRssMb: process.resourceUsage().maxRSS / 1024,
      outputs: { model: options.out, modelSha256: outcome.model.sha256, safetensors: safetensorsPath, report: reportPath },
    };
    await writeFileAtomic(reportPath, `${JSON.stringify(report, null, 2)}\n`, 'writing the merge report');
    written.push(reportPath);
    return { report, reportText: formatMergeReport(report) };
  } catch (error) {
    // A merge that could not write all its outputs leaves none of them behind.
    for (const path of written) await rm(path, { force: true });
    throw error;
  } finally {
    await scratch.remove();
  }
}

/** `--alpha auto`'s rules: RegMean on local models with one validation file each; `--validation-data` only with it. */
function checkAlphaAuto(options: LocalMergeOptions): void {
  const spec = options.spec;
  const validation = options.validation?.data ?? [];
  if (!alphaAfterStatistics(spec)) {
    if (spec.alphaCandidates !== undefined)
      throw new GramfuseError(ErrorCode.InvalidArgument, `--alpha auto: only RegMean has an α to choose, not ${spec.method}`, {
        facts: { flag: 'alpha', method: spec.method },
      });
    if (validation.length > 0 || options.candidatesDir !== undefined)
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        `--${validation.length > 0 ? 'validation-data' : 'candidates'}: only used with --alpha auto (α chosen on validation data); drop it or add --alpha auto`,
        { facts: { flag: validation.length > 0 ? 'validation-data' : 'candidates' } },
      );
    return;
  }
  if ((options.bundles ?? []).length > 0)
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      "--bundle: --alpha auto rebuilds each owner's statistics at the chosen α from its model, which a bundle does not carry; merge bundles at a fixed --alpha",
      { facts: { flag: 'bundle' } },
    );
  if (validation.length !== options.models.length)
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `--validation-data: --alpha auto scores each candidate on every owner's held-out data; give one --validation-data per --model (${validation.length} for ${options.models.length} models)`,
      { facts: { flag: 'validation-data', models: options.models.length, validation: validation.length } },
    );
  const grid = spec.alphaCandidates!;
  if (new Set(grid).size !== grid.length)
    throw new GramfuseError(ErrorCode.InvalidArgument, `--alpha-grid: ${grid.join(',')} lists an α twice; give each candidate once`, {
      facts: { flag: 'alpha-grid' },
    });
}

/** One owner's statistics into the scratch directory, in float64 under the disclosure plan's ids. */
async function addOwner(scratch: StatisticDirectory, analysis: ModelAnalysis, spec: MergeSpec, contribution: Contribution): Promise<void> {
  const full = planDisclosure(contribution.owner, analysis, spec, 'float64', DisclosurePolicy.parse({}));
  // TIES sends only the averaged head through the statistics: the plan is cut to what the contribution holds.
  const present = (id: string): boolean => {
    const parsed = parseStatisticId(id);
    return parsed.kind !== 'parameter' || contribution.parameters.has(parsed.parameter);
  };
  const plan = { ...full, statistics: full.statistics.filter((s) => present(s.id)) };
  await scratch.add(plan, contributionTensors(plan, contribution));
}
