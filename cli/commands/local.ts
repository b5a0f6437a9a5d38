import type { Command } from 'commander';
import { Option } from 'commander';

import { EvalFlags, ExportFlags, MergeFlags, parseFlags } from '../flags.js';
import { checkInputFiles, EMPTY } from '../input-files.js';
import { createProgressBar, progressEnabled } from '../progress.js';
import {
  collect,
  collectionOptions,
  labelledData,
  labelledDataInputs,
  labelledDataOptions,
  mergeSpecOptions,
  stdout,
  zodDefault,
} from './common.js';

export function registerLocalCommands(program: Command): void {
  program
    .command('inspect')
    .description('Show the linear layers, Gram groups, row rules and fingerprint gramfuse finds in a model')
    .argument('<model>', 'path to an .onnx file or a Hugging Face checkpoint directory')
    .addOption(new Option('--json', 'print one JSON object'))
    .option('--hf-checkpoint <dir>', "name the parameters by this checkpoint's tensors (matched by value), not by the export's structure")
    .action(async (model: string, options: { json?: boolean; hfCheckpoint?: string }) => {
      await checkInputFiles([
        { flag: '<model>', path: model, kind: 'model', empty: EMPTY.model },
        { flag: '--hf-checkpoint', path: options.hfCheckpoint, kind: 'directory' },
      ]);
      const { inspectCommand } = await import('../inspect.js');
      await inspectCommand(model, options, stdout);
    });

  collectionOptions(
    mergeSpecOptions(
      program
        .command('merge')
        .description("Local mode: merge fine-tuned models with their owners' data into one model (RegMean or a baseline)")
        .option('--model <path>', 'a fine-tuned model (.onnx, or a Hugging Face checkpoint directory); repeat once per owner', collect)
        .option(
          '--data <path>',
          "that owner's data (.jsonl, .csv or .parquet; text, chat or prompt/completion rows); one after each --model",
          collect,
        )
        .option(
          '--bundle <dir>',
          'a statistics bundle from `gramfuse agent collect`: an owner merged from its statistics alone; repeatable',
          collect,
        )
        .option('--template <path>', 'the model whose graph the merged model takes (default: the first --model)')
        .option('--tokenizer <path>', "HuggingFace tokenizer.json (needed for RegMean; default: a Hugging Face --model directory's)")
        .option('--base <path>', 'the model the owners fine-tuned from (task-arithmetic, ties)')
        .option('--lambda <l>', 'task arithmetic / TIES scaling (defaults 0.3 / 1.0)')
        .option('--ties-k <k>', 'TIES: fraction of each task vector kept', zodDefault(MergeFlags.shape.tiesK))
        .option('--head <mode>', 'output head: average | method (default: average for task-arithmetic and ties)'),
      { alphaAuto: true },
    ),
  )
    .option('--alpha-grid <list>', 'with --alpha auto: the candidate alphas, comma-separated (default 0.1,0.3,0.5,0.7,0.8,0.9,0.95,1.0)')
    .option(
      '--validation-data <path>',
      "with --alpha auto: that owner's held-out data (labelled for classifiers; text for causal LMs, scored by perplexity); one per --model",
      collect,
    )
    .option('--labels <path>', "with --alpha auto: JSON list of labels in logit order (default: the model's labels metadata)")
    .option('--label-field <name>', 'with --alpha auto: field holding the label in --validation-data (default: label)')
    .option('--validation-max-examples <n>', 'with --alpha auto: score each candidate on a seeded random subset of each validation file')
    .option('--candidates <dir>', "with --alpha auto: keep every candidate's merged model there (alpha-<a>.onnx)")
    .requiredOption('--out <path>', 'the merged model (.onnx); .safetensors and .report.json are written beside it')
    .option('--report <path>', 'where to write the merge report (JSON)')
    .option(
      '--hf-out <dir>',
      'also write the merged model as a Hugging Face checkpoint directory (model.safetensors in the input dtype, config.json, tokenizer, README.md); ONNX models need --hf-checkpoint',
    )
    .option(
      '--hf-checkpoint <dir>',
      "the checkpoint an owner's model was exported from: names, layouts, dtypes and config.json for --hf-out",
    )
    .option('--hf-model <path>', 'the ONNX export of --hf-checkpoint, whose values it holds (default: the first --model, or --template)')
    .option('--json', 'print one JSON summary object and nothing else on stdout')
    .action(async (raw: Record<string, unknown>) => {
      const flags = parseFlags(MergeFlags, raw);
      await checkInputFiles([
        { flag: '--model', path: flags.model, kind: 'model', empty: EMPTY.model },
        { flag: '--data', path: flags.data, empty: EMPTY.data },
        { flag: '--bundle', path: flags.bundle, kind: 'directory' },
        { flag: '--template', path: flags.template, kind: 'model', empty: EMPTY.model },
        { flag: '--tokenizer', path: flags.tokenizer, empty: EMPTY.tokenizer },
        { flag: '--base', path: flags.base, kind: 'model', empty: EMPTY.model },
        { flag: '--hf-checkpoint', path: flags.hfCheckpoint, kind: 'directory' },
        { flag: '--hf-model', path: flags.hfModel, empty: EMPTY.model },
        { flag: '--validation-data', path: flags.validationData, empty: EMPTY.data },
        { flag: '--labels', path: flags.labels, empty: EMPTY.labels },
      ]);
      const { exportHfCheckpoint, mergeHfOutput } = await import('../hf-export.js');
      const { DEFAULT_ALPHA_GRID, MergeSpec } = await import('../../shared/merge/index.js');
      const { runLocalMerge } = await import('../local-merge.js');
      const template = flags.template ?? flags.model[0];
      // Checked before the merge runs: a directory that is not empty, names that do not map, or ONNX models without
      // --hf-checkpoint fail now. A Hugging Face template is its own checkpoint.
      const hfOutput =
        flags.hfOut === undefined || template === undefined ? undefined : await mergeHfOutput(template, { ...flags, hfOut: flags.hfOut });
      const hf = hfOutput?.options;
      const prepared = hfOutput?.prepared;
      const auto = flags.alpha === 'auto';
      const spec = MergeSpec.parse({
        method: flags.method,
        // --alpha auto: `alpha` becomes the chosen candidate; until then the spec's default stands in.
        ...(auto ? { alphaCandidates: flags.alphaGrid ?? [...DEFAULT_ALPHA_GRID] } : { alpha: flags.alpha }),
        weighting: flags.weighting,
        includePadding: flags.includePadding,
        tiesK: flags.tiesK,
        ...(flags.lambda === undefined ? {} : { lambda: flags.lambda }),
        ...(flags.head === undefined ? {} : { head: flags.head }),
      });
      const show = progressEnabled(flags.json);
      const bars = new Map<string, ReturnType<typeof createProgressBar>>();
      const solveBar = createProgressBar('solve (Gram groups)', 'groups', show);
      const candidateBar = auto ? createProgressBar('alpha candidates (solve)', 'candidates', show) : undefined;
      const result = await runLocalMerge({
        models: flags.model,
        data: flags.data,
        bundles: flags.bundle,
        ...(flags.template === undefined ? {} : { template: flags.template }),
        spec,
        out: flags.out,
        seed: flags.seed,
        batchSize: flags.batchSize,
        maxLength: flags.maxLength,
        textField: flags.textField,
        ...(flags.tokenizer === undefined ? {} : { tokenizer: flags.tokenizer }),
        ...(flags.base === undefined ? {} : { base: flags.base }),
        ...(flags.report === undefined ? {} : { report: flags.report }),
        ...(flags.maxExamples === undefined ? {} : { maxExamples: flags.maxExamples }),
        ...(flags.threads === undefined ? {} : { threads: flags.threads }),
        ...(flags.memoryBudget === undefined ? {} : { memoryBudget: flags.memoryBudget }),
        ...(flags.validationData.length === 0
          ? {}
          : {
              validation: {
                data: flags.validationData,
                labelField: flags.labelField ?? 'label',
                ...(flags.labels === undefined ? {} : { labels: flags.labels }),
                ...(flags.validationMaxExamples === undefined ? {} : { maxExamples: flags.validationMaxExamples }),
              },
            }),
        ...(flags.candidates === undefined ? {} : { candidatesDir: flags.candidates }),
        onCandidate: (done, total) => {
          candidateBar?.update(done, total);
          if (done === total) candidateBar?.stop();
        },
        onCollect: (owner, p) => {
          let bar = bars.get(owner);
          if (bar === undefined) bars.set(owner, (bar = createProgressBar(`collect ${owner}`, 'examples', show)));
          bar.update(p.examples, p.total);
          if (p.examples === p.total) bar.stop();
        },
        onSolve: (done, total) => {
          solveBar.update(done, total);
          if (done === total) solveBar.stop();
        },
      });
      const exported =
        hf === undefined ? undefined : await exportHfCheckpoint({ ...hf, model: flags.out, report: result.report }, prepared);
      const summary = exported === undefined ? result.report : { ...result.report, hfOut: { dir: exported.out, files: exported.files } };
      stdout(
        flags.json
          ? `${JSON.stringify(summary)}\n`
          : `${result.reportText}\n${exported === undefined ? '' : `Hugging Face checkpoint ${exported.out} (${exported.files.join(', ')})\n`}`,
      );
    });

  program
    .command('export')
    .description(
      "A model's parameters as a Hugging Face checkpoint directory that transformers loads (names from --hf-checkpoint by value, else from the export's structure), or a Hugging Face directory built as one ONNX file (--onnx-out)",
    )
    .argument('<model>', 'path to an .onnx file or a Hugging Face checkpoint directory')
    .option('--hf-out <dir>', 'the checkpoint directory to write (new or empty)')
    .option('--onnx-out <file>', 'write the model as ONNX (a Hugging Face directory: the graph gramfuse builds from it)')
    .option('--hf-checkpoint <dir>', 'the checkpoint this model was exported from: its names, layouts, dtypes and config.json')
    .option('--tokenizer <path>', 'tokenizer.json to copy in (tokenizer_config.json and special_tokens_map.json beside it too)')
    .option('--json', 'print one JSON object')
    .action(async (model: string, raw: Record<string, unknown>) => {
      const flags = parseFlags(ExportFlags, raw);
      await checkInputFiles([
        { flag: '<model>', path: model, kind: 'model', empty: EMPTY.model },
        { flag: '--hf-checkpoint', path: flags.hfCheckpoint, kind: 'directory' },
        { flag: '--tokenizer', path: flags.tokenizer, empty: EMPTY.tokenizer },
      ]);
      const { exportHfCheckpoint, exportOnnx } = await import('../hf-export.js');
      if (flags.onnxOut !== undefined) {
        const o = await exportOnnx(model, flags.onnxOut);
        stdout(flags.json && flags.hfOut === undefined ? `${JSON.stringify(o)}\n` : `${o.out}: ${o.initializers} initializers\n`);
      }
      if (flags.hfOut === undefined) return;
      const r = await exportHfCheckpoint({
        model,
        out: flags.hfOut,
        ...(flags.hfCheckpoint === undefined ? {} : { checkpoint: flags.hfCheckpoint }),
        ...(flags.tokenizer === undefined ? {} : { tokenizer: flags.tokenizer }),
      });
      stdout(
        flags.json
          ? `${JSON.stringify({ out: r.out, files: r.files, bytes: r.bytes, names: r.mapping.source, tensors: r.mapping.entries.length, constants: r.mapping.constants })}\n`
          : `${r.out}: ${r.mapping.entries.length} tensors (${r.bytes} bytes), names from ${r.mapping.source === 'checkpoint' ? 'the checkpoint' : 'the structure'}; ${r.files.join(', ')}\n`,
      );
    });

  labelledDataOptions(
    program
      .command('eval')
      .description(
        'Accuracy and macro-F1 of a classifier (or, with --ensemble, the logit average of several) on labelled data; perplexity and next-token accuracy of a causal LM on held-out text',
      )
      .option('--model <path>', 'model to evaluate (.onnx); repeat with --ensemble', collect),
    'labelled data (.jsonl, .csv or .parquet)',
  )
    .option('--ensemble', 'average the logits of all --model')
    .option('--batch-size <n>', 'examples per batch', zodDefault(EvalFlags.shape.batchSize))
    .option('--json', 'print one JSON object')
    .action(async (raw: Record<string, unknown>) => {
      const flags = parseFlags(EvalFlags, raw);
      await checkInputFiles([{ flag: '--model', path: flags.model, kind: 'model', empty: EMPTY.model }, ...labelledDataInputs(flags)]);
      const bar = createProgressBar('evaluate', 'examples', progressEnabled(flags.json));
      const { runEvaluation } = await import('../../agent/index.js');
      const result = await runEvaluation({
        ...labelledData(flags),
        models: flags.model,
        ensemble: flags.ensemble,
        batchSize: flags.batchSize,
        onProgress: (p) => bar.update(p.examples, p.total),
      });
      bar.stop();
      stdout(
        flags.json
          ? `${JSON.stringify(result)}\n`
          : 'task' in result
            ? `examples ${result.examples}\ntokens ${result.tokens}\nperplexity ${result.perplexity.toFixed(3)}\ntoken accuracy ${(result.tokenAccuracy * 100).toFixed(2)} %\n`
            : `examples ${result.examples}\naccuracy ${(result.accuracy * 100).toFixed(2)} %\nmacro-F1 ${(result.macroF1 * 100).toFixed(2)} %\n`,
      );
    });
}
