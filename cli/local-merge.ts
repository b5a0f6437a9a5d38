import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { collectInWorker, ownerFromModelPath, type Progress } from '../agent/index.js';
import {
  addContribution,
  analyzeModel,
  buildContribution,
  createOrtSolver,
  emptyAggregate,
  ensureDirectoryFor,
  ErrorCode,
  fingerprint,
  finishParameters,
  formatMergeReport,
  defaultLambda,
  GramfuseError,
  headIsAveraged,
  headParameters,
  type LayerDiagnostics,
  listParameters,
  loadModel,
  type MergeReport,
  type MergeSpec,
  needsBase,
  packageVersion,
  type OnnxModel,
  readBundle,
  readParameterValues,
  saveModel,
  solveRegMean,
  sumMaps,
  tiesAgree,
  tiesElect,
  tiesFinish,
  tiesTrim,
  withParameterValues,
  writeFileAtomic,
  writeSafetensors,
} from '../shared/index.js';

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
  readonly onCollect?: (owner: string, progress: Progress) => void;
  readonly onSolve?: (done: number, total: number, layer: LayerDiagnostics) => void;
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
  const tiesAveraged = emptyAggregate(analysis.fingerprint);
  const aggregate = emptyAggregate(analysis.fingerprint);
  const owners: MergeReport['owners'][number][] = [];
  let collectSeconds = 0;
  const tiesTrimmed: Map<string, Float64Array>[] = [];
  for (const [i, model] of models.entries()) {
    const owner = names[i]!;
    const dataPath = options.data[i];
    let collected: Awaited<ReturnType<typeof collectInWorker>> | undefined;
    if (spec.method === 'regmean') {
      // The agent's own collection job, in its worker thread: one implementation for both modes.
      collected = await collectInWorker(
        {
          owner,
          // The template's analysis serves every owner: their fingerprints were checked against it above.
          analysis,
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
        },
        (p) => options.onCollect?.(owner, p),
      );
      collectSeconds += collected.seconds;
    }
    if (spec.method === 'ties') {
      const theta = new Map(listParameters(model).map((p) => [p.name, readParameterValues(model, p.name)]));
      const head = new Map([...theta].filter(([name]) => averagedHead.has(name)));
      for (const name of head.keys()) theta.delete(name);
      tiesTrimmed.push(tiesTrim(theta, baseValues!, spec.tiesK));
      addContribution(tiesAveraged, {
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
      addContribution(aggregate, collected?.contribution ?? (await buildContribution(owner, model, analysis, spec, undefined)));
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
    const { manifest, contribution } = await readBundle(path);
    const b = manifest.plan.spec;
    if (b.method !== spec.method || b.alpha !== spec.alpha || b.weighting !== spec.weighting || b.includePadding !== spec.includePadding) {
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        `--bundle ${path}: collected for ${b.method} (alpha ${b.alpha}, weighting ${b.weighting}, padding ${b.includePadding ? 'included' : 'excluded'}), but this merge is ${spec.method} (alpha ${spec.alpha}, weighting ${spec.weighting}, padding ${spec.includePadding ? 'included' : 'excluded'}); pass the same settings`,
        { facts: { bundle: path } },
      );
    }
    addContribution(aggregate, contribution);
    owners.push({
      name: contribution.owner,
      model: `bundle ${path}`,
      data: null,
      examples: contribution.examples,
      tokens: contribution.tokens,
      rows: contribution.rows,
    });
  }

  const t1 = performance.now();
  let values: Map<string, Float64Array>;
  let layers: LayerDiagnostics[] = [];
  if (spec.method === 'ties') {
    // Round 1 (sum of trimmed task vectors → elected signs), round 2 (agreeing entries and counts).
    const elected = tiesElect(sumMaps(tiesTrimmed));
    const agreed = tiesTrimmed.map((t) => tiesAgree(t, elected));
    const tiesBase = new Map([...baseValues!].filter(([name]) => !averagedHead.has(name)));
    values = tiesFinish(
      tiesBase,
      sumMaps(agreed.map((a) => a.values)),
      sumMaps(agreed.map((a) => a.counts)),
      spec.lambda ?? defaultLambda('ties'),
    );
    for (const [name, v] of finishParameters(tiesAveraged, { ...spec, method: 'average' }, undefined)) values.set(name, v);
  } else {
    values = finishParameters(aggregate, spec, baseValues, averagedHead);
    if (spec.method === 'regmean') {
      const solver = await createOrtSolver(options.threads === undefined ? {} : { threads: options.threads });
      try {
        const solved = await solveRegMean(aggregate, analysis, solver, options.onSolve);
        for (const [name, v] of solved.values) values.set(name, v);
        layers = solved.layers;
      } finally {
        await solver.release();
      }
    }
  }
  const solveSeconds = (performance.now() - t1) / 1000;

  const t2 = performance.now();
  const merged = withParameterValues(template, values);
  await saveModel(merged, options.out);
  const written: string[] = [options.out];
  try {
    const params = listParameters(template);
    await writeSafetensors(
      safetensorsPath,
      params.map((p) => ({
        name: p.name,
        dtype: 'F32' as const,
        shape: p.shape,
        data: Float32Array.from(values.get(p.name) ?? readParameterValues(template, p.name)),
      })),
      { producer: `gramfuse ${packageVersion()}`, method: spec.method, fingerprint: analysis.fingerprint },
    );
    written.push(safetensorsPath);
    const modelSha256 = createHash('sha256')
      .update(await readFile(options.out))
      .digest('hex');
    const solvedNames = new Set(layers.flatMap((l) => l.weights));
    const report: MergeReport = {
      tool: { name: 'gramfuse', version: packageVersion() },
      createdAt: new Date().toISOString(),
      spec,
      template: templatePath,
      fingerprint: analysis.fingerprint,
      base: options.base ?? null,
      owners,
      layers,
      averaged: listParameters(template)
        .map((p) => p.name)
        .filter((n) => !solvedNames.has(n)),
      seconds: {
        collect: collectSeconds,
        solve: solveSeconds,
        write: (performance.now() - t2) / 1000,
        total: (performance.now() - started) / 1000,
      },
      peakRssMb: process.resourceUsage().maxRSS / 1024,
      outputs: { model: options.out, modelSha256, safetensors: safetensorsPath, report: reportPath },
    };
    await writeFileAtomic(reportPath, `${JSON.stringify(report, null, 2)}\n`, 'writing the merge report');
    written.push(reportPath);
    return { report, reportText: formatMergeReport(report) };
  } catch (error) {
    // A merge that could not write all its outputs leaves none of them behind.
    for (const path of written) await rm(path, { force: true });
    throw error;
  }
}
