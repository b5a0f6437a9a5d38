import { createInterface } from 'node:readline/promises';

import type { Command } from 'commander';

import type { OwnerPolicy, AgentOptions } from '../../agent/index.js';
import { packageVersion } from '../../shared/version.js';
import { natsOption } from '../federation-flags.js';
import { AgentEvaluateFlags, AgentFlags, AgentRunFlags, parseFlags } from '../flags.js';
import { checkInputFiles, EMPTY, type InputFile, tlsInputs } from '../input-files.js';
import { createProgressBar, progressEnabled, progressJsonWriter } from '../progress.js';
import {
  collectionOptions,
  labelledData,
  labelledDataInputs,
  labelledDataOptions,
  mergeSpecOptions,
  natsSecurityOptions,
  stdout,
  tlsOptions,
  zodDefault,
} from './common.js';

export function registerAgentCommands(program: Command): void {
  const agent = program.command('agent').description('What a data owner runs: show what would leave, compute it, hand it over');
  /** The owner's flags; `agent run` takes the merge settings from the job, so only plan and collect offer them. */
  const agentOptions = (command: Command, forJob = false): Command =>
    collectionOptions(
      (forJob
        ? command
        : mergeSpecOptions(command.option('--owner <name>', 'owner name recorded in the plan (default: from the model path)'))
      )
        .requiredOption('--model <path>', "the owner's fine-tuned model (.onnx, or a Hugging Face checkpoint directory)")
        .requiredOption('--data <path>', "the owner's private data (.jsonl, .csv or .parquet; text, chat or prompt/completion rows)")
        .option('--tokenizer <path>', "HuggingFace tokenizer.json (default: the model directory's)")
        .option(
          '--dtype <t>',
          'auto | float64 | float32 for the statistics (auto: float32 for models over 1 GiB of parameters; sums stay float64; counts always float64)',
          zodDefault(AgentFlags.shape.dtype),
        )
        .option('--min-rows <n>', 'policy: refuse to disclose a Gram built from fewer rows (default 256)')
        .option(
          '--policy <file>',
          "the owner's policy file (YAML or JSON: minRowsPerGroup, allowedLayers, expectFingerprint); combined with the flags and each job's policy, strictest wins",
        )
        .option('--allow-layers <names>', 'policy: comma-separated weights whose Gram statistics may leave (default: all)')
        .option('--expect-fingerprint <sha256:…>', "the job's model fingerprint; refuse any other model")
        .option('--text-pair-field <name>', 'field holding the second text of a pair')
        .option('--device <d>', 'auto (CUDA when available, else CPU) | cpu | cuda', zodDefault(AgentFlags.shape.device))
        .option('--json', 'print one JSON object'),
    );
  /** The owner's files, checked before anything is loaded or any coordinator is called. */
  const ownerInputs = (flags: ReturnType<typeof AgentFlags.parse>): InputFile[] => [
    { flag: '--model', path: flags.model, kind: 'model', empty: EMPTY.model },
    { flag: '--data', path: flags.data, empty: EMPTY.data },
    { flag: '--tokenizer', path: flags.tokenizer, empty: EMPTY.tokenizer },
    { flag: '--policy', path: flags.policy, empty: EMPTY.config },
  ];
  /** The owner's policy: its flags and its policy file, strictest wins (a job can only tighten it). */
  const ownerPolicyOf = async (flags: ReturnType<typeof AgentFlags.parse>): Promise<OwnerPolicy> => {
    const { ownerPolicy, readOwnerPolicyFile } = await import('../../agent/index.js');
    const { DisclosurePolicy } = await import('../../shared/merge/index.js');
    return ownerPolicy(
      {
        minRowsPerGroup: flags.minRows ?? DisclosurePolicy.parse({}).minRowsPerGroup,
        minRowsGiven: flags.minRows !== undefined,
        ...(flags.allowLayers === undefined
          ? {}
          : {
              allowedLayers: flags.allowLayers
                .split(',')
                .map((l) => l.trim())
                .filter((l) => l !== ''),
            }),
        ...(flags.expectFingerprint === undefined ? {} : { expectFingerprint: flags.expectFingerprint }),
      },
      flags.policy === undefined ? undefined : { path: flags.policy, policy: await readOwnerPolicyFile(flags.policy) },
    );
  };
  /** What the agent's options need from the agent and merge code, imported when a command runs. */
  const agentModules = async () => ({ ...(await import('../../agent/index.js')), ...(await import('../../shared/merge/index.js')) });
  const toAgentOptions = (
    flags: ReturnType<typeof AgentFlags.parse>,
    owner: OwnerPolicy,
    { MergeSpec, ownerOnly }: Awaited<ReturnType<typeof agentModules>>,
  ): AgentOptions => ({
    model: flags.model,
    data: flags.data,
    tokenizer: flags.tokenizer,
    spec: MergeSpec.parse({
      method: flags.method,
      alpha: flags.alpha,
      weighting: flags.weighting,
      includePadding: flags.includePadding,
    }),
    dtype: flags.dtype,
    policy: ownerOnly(owner).policy,
    maxLength: flags.maxLength,
    batchSize: flags.batchSize,
    seed: flags.seed,
    textField: flags.textField,
    device: flags.device,
    toolVersion: packageVersion(),
    ...(flags.owner === undefined ? {} : { owner: flags.owner }),
    ...(owner.expectFingerprint === undefined ? {} : { expectFingerprint: owner.expectFingerprint }),
    ...(flags.maxExamples === undefined ? {} : { maxExamples: flags.maxExamples }),
    ...(flags.textPairField === undefined ? {} : { textPairField: flags.textPairField }),
    ...(flags.threads === undefined ? {} : { threads: flags.threads }),
    ...(flags.memoryBudget === undefined ? {} : { memoryBudget: flags.memoryBudget }),
  });

  agentOptions(
    agent.command('plan').description('Print every statistic that would leave this machine, before anything is computed'),
  ).action(async (raw: Record<string, unknown>) => {
    const flags = parseFlags(AgentFlags, raw);
    await checkInputFiles(ownerInputs(flags));
    const owner = await ownerPolicyOf(flags);
    const { formatPlan, planForOwner } = await import('../../agent/index.js');
    const { plan, examples } = await planForOwner(toAgentOptions(flags, owner, await agentModules()));
    stdout(flags.json ? `${JSON.stringify({ ...plan, examples })}\n` : `${formatPlan(plan, examples)}\n`);
  });

  agentOptions(
    agent
      .command('collect')
      .description('Compute the statistics of the plan and write them as a verified bundle (statistics.safetensors + manifest.json)'),
  )
    .requiredOption('--out <dir>', 'the bundle directory to create (never overwritten)')
    .action(async (raw: Record<string, unknown>) => {
      const flags = parseFlags(AgentFlags, raw);
      await checkInputFiles(ownerInputs(flags));
      const bar = createProgressBar('collect', 'examples', progressEnabled(flags.json));
      let deviceReason = '';
      const { collectBundle, formatPasses, formatPlan, memoryTarget } = await import('../../agent/index.js');
      const { formatBytes } = await import('../../shared/index.js');
      const { manifest, result } = await collectBundle({
        ...toAgentOptions(flags, await ownerPolicyOf(flags), await agentModules()),
        out: flags.out!,
        onProgress: (p) => bar.update(p.examples, p.total),
        onDevice: (reason) => (deviceReason = reason),
      });
      bar.stop();
      const target = memoryTarget(result.modelBytes, result.passes);
      if (flags.json) {
        stdout(
          `${JSON.stringify({ bundle: flags.out, device: result.device, seconds: result.seconds, examples: result.statistics.examples, tokens: result.statistics.tokens, passes: result.passes.length, memoryBudgetBytes: result.memoryBudget, peakRssBytes: result.peakRssBytes, memoryTargetBytes: target, modelBytes: result.modelBytes, plan: manifest.plan })}\n`,
        );
      } else {
        const mb = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`;
        stdout(
          `${formatPlan(manifest.plan, result.statistics.examples)}\n\ndevice: ${deviceReason}\ncollection: ${formatPasses(result.passes, result.statistics.examples, result.memoryBudget)}\ncollected ${result.statistics.examples} examples, ${result.statistics.tokens} tokens in ${result.seconds.toFixed(1)} s (${(result.statistics.tokens / result.seconds).toFixed(0)} tokens/s)\npeak RSS ${mb(result.peakRssBytes)} (target ≤ ${mb(target)}: model ${mb(result.modelBytes)} + 1.5 × largest pass + 500 MiB)\nbundle ${flags.out} (${formatBytes(manifest.plan.totals.bytes)}): statistics.safetensors + manifest.json with a SHA-256 per statistic\n`,
        );
      }
    });

  natsSecurityOptions(
    tlsOptions(
      agentOptions(
        agent
          .command('run')
          .description(
            'Join a job: plan → approval (unless --yes) → collect → upload only what the coordinator lacks → verified receipts saved locally',
          ),
        true,
      )
        .requiredOption('--coordinator <host:port>', 'coordinator address')
        .requiredOption('--job <id>', 'job id')
        .option('--work-dir <dir>', 'where this agent keeps its bundle and receipts per job (reused when resuming)', 'gramfuse-agent')
        .option('--yes', 'approve the disclosure plan without asking (automation)')
        .option('--chunk-bytes <n>', 'upload chunk size', String(4 * 1024 * 1024))
        .option(
          '--upload-window <n>',
          "chunks in flight unacknowledged (an interruption re-sends at most this many); default and most: the job's limits.uploadWindow",
        )
        .option('--nats <url>', "also publish this agent's audit records to JetStream (GRAMFUSE_AUDIT)")
        .option(
          '--upload-attempts <n>',
          'tries for an upload whose link drops or whose coordinator is unavailable (backoff with jitter)',
          '5',
        )
        .option('--progress-json', 'write progress as JSON lines on stderr ({"phase","done","total"}), for a program driving the agent'),
    ),
  ).action(async (raw: Record<string, unknown>) => {
    const flags = parseFlags(AgentRunFlags, raw);
    await checkInputFiles([...ownerInputs(flags), ...tlsInputs(flags)]);
    const owner = await ownerPolicyOf(flags);
    const { formatPlan, formatPolicySources, runAgent } = await import('../../agent/index.js');
    const { connectOptions } = await import('../federation-commands.js');
    const base = toAgentOptions(flags, owner, await agentModules());
    const show = progressEnabled(flags.json);
    const collectBar = createProgressBar('collect', 'examples', show);
    const uploadBar = createProgressBar('upload', 'bytes', show);
    const progressLine = progressJsonWriter(flags.progressJson);
    const result = await runAgent({
      ...base,
      connect: await connectOptions(flags.coordinator, flags),
      jobId: flags.job,
      workDir: flags.workDir,
      yes: flags.yes,
      chunkBytes: flags.chunkBytes,
      ...(flags.uploadWindow === undefined ? {} : { uploadWindow: flags.uploadWindow }),
      ...natsOption(flags),
      uploadAttempts: flags.uploadAttempts,
      onRetry: (attempt, error) => {
        if (!flags.json) process.stderr.write(`upload attempt ${attempt} failed (${error.toLine()}); retrying\n`);
      },
      ownerPolicy: owner,
      onPolicy: (effective) => {
        if (!flags.json) process.stderr.write(`${formatPolicySources(effective)}\n`);
      },
      onPlan: (plan, examples) => {
        if (!flags.json) process.stderr.write(`${formatPlan(plan, examples)}\n\n`);
      },
      approve: async (summary) => {
        if (!process.stdin.isTTY) return false;
        const rl = createInterface({ input: process.stdin, output: process.stderr });
        const answer = await rl.question(`Send ${summary}? [y/N] `);
        rl.close();
        return /^y(es)?$/i.test(answer.trim());
      },
      onCollect: (p) => {
        collectBar.update(p.examples, p.total);
        progressLine('collect', p.examples, p.total);
      },
      onUpload: (sent, total) => {
        uploadBar.update(sent, total);
        progressLine('upload', sent, total);
      },
      onSecure: (p) => {
        if (!flags.json) process.stderr.write(`secure aggregation: ${p.message}\n`);
      },
    });
    collectBar.stop();
    uploadBar.stop();
    stdout(
      flags.json
        ? `${JSON.stringify(result)}\n`
        : `uploaded ${result.bytesSent} bytes${result.secureAggregation === undefined ? '' : ` (masked: secure aggregation, resolution ≤ ${result.secureAggregation.maxResolution.toExponential(1)})`} in ${result.chunksSent} chunks (${result.chunksSkipped} already held); ${result.receipts} signed receipts verified and saved to ${result.receiptsPath}\n`,
    );
  });

  tlsOptions(
    labelledDataOptions(
      agent
        .command('evaluate')
        .description(
          "Federated evaluation: download the job's merged model (SHA-256 verified), evaluate it on this owner's held-out data, report only the metrics (signed into both ledgers)",
        ),
      "the owner's held-out labelled data (.jsonl, .csv or .parquet); it never leaves this machine",
    )
      .requiredOption('--coordinator <host:port>', 'coordinator address')
      .requiredOption('--job <id>', 'job id')
      .option('--work-dir <dir>', "this agent's work directory (as for agent run)", 'gramfuse-agent')
      .option('--no-report', 'evaluate only; send nothing to the coordinator')
      .option('--json', 'print one JSON object'),
  ).action(async (raw: Record<string, unknown>) => {
    const flags = parseFlags(AgentEvaluateFlags, raw);
    await checkInputFiles([...labelledDataInputs(flags), ...tlsInputs(flags)]);
    const bar = createProgressBar('evaluate', 'examples', progressEnabled(flags.json));
    const { evaluateForJob } = await import('../../agent/index.js');
    const { connectOptions } = await import('../federation-commands.js');
    const result = await evaluateForJob({
      connect: await connectOptions(flags.coordinator, flags),
      jobId: flags.job,
      workDir: flags.workDir,
      ...labelledData(flags),
      report: flags.report,
      onProgress: (p) => bar.update(p.examples, p.total),
    });
    bar.stop();
    stdout(
      flags.json
        ? `${JSON.stringify(result)}\n`
        : `job ${result.job}: merged model ${result.modelSha256.slice(0, 16)}… on ${result.examples} held-out examples of ${result.owner}: accuracy ${(result.accuracy * 100).toFixed(2)} %, macro-F1 ${(result.macroF1 * 100).toFixed(2)} %${result.reported ? ' (reported to the coordinator, recorded in both ledgers)' : ' (not reported)'}\n`,
    );
  });
}
