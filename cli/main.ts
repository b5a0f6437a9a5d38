#!/usr/bin/env node
// The CLI entry: the only place that calls process.exit. Commands live beside it (cli/), in agent/
// and in coordinator/; errors are mapped to exit codes by the one table in shared/errors.ts.
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline/promises';

import { Command, CommanderError, Option } from 'commander';

import type { OwnerPolicy, AgentOptions } from '../agent/index.js';
import type { TlsFlags } from './federation-commands.js';
import { ErrorCode, exitCodeByErrorCode, fileError, GramfuseError, toGramfuseError } from '../shared/errors.js';
import { packageVersion } from '../shared/version.js';
import { AgentEvaluateFlags, AgentFlags, CoordinatorLimitFlags, EvalFlags, MergeFlags, parseFlags } from './flags.js';
import { createProgressBar, progressEnabled, progressJsonWriter } from './progress.js';

/**
 * Everything a command runs, loaded only when a command runs (a preAction hook): `gramfuse --help` and
 * `gramfuse <command> --help` load neither onnxruntime-node nor NATS.
 */
const loadCommandModules = async () => ({
  ...(await import('../agent/index.js')),
  ...(await import('../client/index.js')),
  ...(await import('../coordinator/index.js')),
  ...(await import('../shared/index.js')),
  ...(await import('../shared/merge/index.js')),
  ...(await import('./audit-commands.js')),
  ...(await import('./demo.js')),
  ...(await import('./federation-commands.js')),
  ...(await import('./inspect.js')),
  ...(await import('./local-merge.js')),
  ...(await import('./watch.js')),
});
let H: Awaited<ReturnType<typeof loadCommandModules>>;

const stdout = (text: string): void => {
  process.stdout.write(text);
};

function buildProgram(): Command {
  const program = new Command('gramfuse')
    .description('Fuse fine-tuned models across organizations with RegMean, without moving their data.')
    .version(packageVersion())
    .hook('preAction', async () => {
      H = await loadCommandModules();
    })
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) });

  program
    .command('inspect')
    .description('Show the linear layers, Gram groups, row rules and fingerprint gramfuse finds in a model')
    .argument('<model>', 'path to an .onnx file')
    .addOption(new Option('--json', 'print one JSON object'))
    .action(async (model: string, options: { json?: boolean }) => {
      await H.inspectCommand(model, options, stdout);
    });

  const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

  program
    .command('merge')
    .description("Local mode: merge fine-tuned models with their owners' data into one model (RegMean or a baseline)")
    .option('--model <path>', 'a fine-tuned model (.onnx); repeat once per owner', collect)
    .option('--data <path>', "that owner's data (.jsonl or .csv); one after each --model", collect)
    .option(
      '--bundle <dir>',
      'a statistics bundle from `gramfuse agent collect`: an owner merged from its statistics alone; repeatable',
      collect,
    )
    .option('--template <path>', 'the model whose graph the merged model takes (default: the first --model)')
    .option('--tokenizer <path>', 'HuggingFace tokenizer.json (needed for RegMean)')
    .option('--method <name>', 'regmean | average | task-arithmetic | ties', 'regmean')
    .option('--alpha <a>', 'RegMean: G̃ = αG + (1−α)diag(G), in [0, 1]', '0.9')
    .option('--weighting <w>', 'equal (each owner counts the same) | tokens (weighted by rows)', 'equal')
    .option('--include-padding', 'count padding tokens in Grams (the reference code does)')
    .option('--base <path>', 'the model the owners fine-tuned from (task-arithmetic, ties)')
    .option('--lambda <l>', 'task arithmetic / TIES scaling (defaults 0.3 / 1.0)')
    .option('--ties-k <k>', 'TIES: fraction of each task vector kept', '0.2')
    .option('--head <mode>', 'output head: average | method (default: average for task-arithmetic and ties)')
    .option('--max-examples <n>', 'use a seeded random subset of at most n examples per owner')
    .option('--seed <n>', 'seed of that subset', '1')
    .option('--batch-size <n>', 'examples per batch', '32')
    .option('--max-length <n>', 'tokens per example, special tokens included', '128')
    .option('--text-field <name>', 'field holding the text', 'text')
    .option('--threads <n>', 'onnxruntime threads')
    .requiredOption('--out <path>', 'the merged model (.onnx); .safetensors and .report.json are written beside it')
    .option('--report <path>', 'where to write the merge report (JSON)')
    .option('--json', 'print one JSON summary object and nothing else on stdout')
    .action(async (raw: Record<string, unknown>) => {
      const flags = parseFlags(MergeFlags, raw);
      const spec = H.MergeSpec.parse({
        method: flags.method,
        alpha: flags.alpha,
        weighting: flags.weighting,
        includePadding: flags.includePadding,
        tiesK: flags.tiesK,
        ...(flags.lambda === undefined ? {} : { lambda: flags.lambda }),
        ...(flags.head === undefined ? {} : { head: flags.head }),
      });
      const show = progressEnabled(flags.json);
      const bars = new Map<string, ReturnType<typeof createProgressBar>>();
      const solveBar = createProgressBar('solve (Gram groups)', 'groups', show);
      const result = await H.runLocalMerge({
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
      stdout(flags.json ? `${JSON.stringify(result.report)}\n` : `${result.reportText}\n`);
    });

  /** The labelled-data flags `eval` and `agent evaluate` share. */
  const labelledDataOptions = (command: Command, data: string): Command =>
    command
      .requiredOption('--data <path>', data)
      .requiredOption('--tokenizer <path>', 'HuggingFace tokenizer.json')
      .option('--labels <path>', "JSON list of labels in logit order (default: the model's labels metadata)")
      .option('--max-examples <n>', 'evaluate a seeded random subset')
      .option('--seed <n>', 'seed of that subset', '1')
      .option('--max-length <n>', 'tokens per example', '128')
      .option('--text-field <name>', 'field holding the text', 'text')
      .option('--label-field <name>', 'field holding the label', 'label')
      .option('--threads <n>', 'onnxruntime threads');
  /** Those flags, parsed, as evaluation options. */
  const labelledData = (flags: ReturnType<typeof AgentEvaluateFlags.parse>) => ({
    data: flags.data,
    tokenizer: flags.tokenizer,
    seed: flags.seed,
    maxLength: flags.maxLength,
    textField: flags.textField,
    labelField: flags.labelField,
    ...(flags.labels === undefined ? {} : { labels: flags.labels }),
    ...(flags.maxExamples === undefined ? {} : { maxExamples: flags.maxExamples }),
    ...(flags.threads === undefined ? {} : { threads: flags.threads }),
  });

  labelledDataOptions(
    program
      .command('eval')
      .description('Accuracy and macro-F1 of a model (or, with --ensemble, the logit average of several) on labelled data')
      .option('--model <path>', 'model to evaluate (.onnx); repeat with --ensemble', collect),
    'labelled data (.jsonl or .csv)',
  )
    .option('--ensemble', 'average the logits of all --model')
    .option('--batch-size <n>', 'examples per batch', '64')
    .option('--json', 'print one JSON object')
    .action(async (raw: Record<string, unknown>) => {
      const flags = parseFlags(EvalFlags, raw);
      const bar = createProgressBar('evaluate', 'examples', progressEnabled(flags.json));
      const result = await H.runEvaluation({
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
          : `examples ${result.examples}\naccuracy ${(result.accuracy * 100).toFixed(2)} %\nmacro-F1 ${(result.macroF1 * 100).toFixed(2)} %\n`,
      );
    });

  const agent = program.command('agent').description('What a data owner runs: show what would leave, compute it, hand it over');
  /** The owner's flags; `agent run` takes the merge settings from the job, so only plan and collect offer them. */
  const agentOptions = (command: Command, forJob = false): Command =>
    (forJob
      ? command
      : command
          .option('--owner <name>', 'owner name recorded in the plan (default: from the model path)')
          .option('--method <name>', 'the merge method: regmean | average | task-arithmetic | ties', 'regmean')
          .option('--alpha <a>', 'RegMean alpha', '0.9')
          .option('--weighting <w>', 'weighting: equal | tokens', 'equal')
          .option('--include-padding', 'count padding tokens in Grams')
    )
      .requiredOption('--model <path>', "the owner's fine-tuned model (.onnx)")
      .requiredOption('--data <path>', "the owner's private data (.jsonl or .csv)")
      .requiredOption('--tokenizer <path>', 'HuggingFace tokenizer.json')
      .option('--dtype <t>', 'float64 | float32 for the statistics (counts are always float64)', 'float64')
      .option('--min-rows <n>', 'policy: refuse to disclose a Gram built from fewer rows (default 256)')
      .option(
        '--policy <file>',
        "the owner's policy file (YAML or JSON: minRowsPerGroup, allowedLayers, expectFingerprint); combined with the flags and each job's policy, strictest wins",
      )
      .option('--allow-layers <names>', 'policy: comma-separated weights whose Gram statistics may leave (default: all)')
      .option('--expect-fingerprint <sha256:…>', "the job's model fingerprint; refuse any other model")
      .option('--max-examples <n>', 'a seeded random subset of at most n examples')
      .option('--seed <n>', 'seed of that subset', '1')
      .option('--batch-size <n>', 'examples per batch', '32')
      .option('--max-length <n>', 'tokens per example', '128')
      .option('--text-field <name>', 'field holding the text', 'text')
      .option('--text-pair-field <name>', 'field holding the second text of a pair')
      .option('--device <d>', 'auto (CUDA when available, else CPU) | cpu | cuda', 'auto')
      .option('--threads <n>', 'onnxruntime threads')
      .option('--json', 'print one JSON object');
  /** The owner's policy: its flags and its policy file, strictest wins (a job can only tighten it). */
  const ownerPolicyOf = async (flags: ReturnType<typeof AgentFlags.parse>): Promise<OwnerPolicy> =>
    H.ownerPolicy(
      {
        minRowsPerGroup: flags.minRows ?? H.DisclosurePolicy.parse({}).minRowsPerGroup,
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
      flags.policy === undefined ? undefined : { path: flags.policy, policy: await H.readOwnerPolicyFile(flags.policy) },
    );
  const toAgentOptions = (flags: ReturnType<typeof AgentFlags.parse>, owner: OwnerPolicy): AgentOptions => ({
    model: flags.model,
    data: flags.data,
    tokenizer: flags.tokenizer,
    spec: H.MergeSpec.parse({ method: flags.method, alpha: flags.alpha, weighting: flags.weighting, includePadding: flags.includePadding }),
    dtype: flags.dtype,
    policy: H.ownerOnly(owner).policy,
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
  });

  agentOptions(
    agent.command('plan').description('Print every statistic that would leave this machine, before anything is computed'),
  ).action(async (raw: Record<string, unknown>) => {
    const flags = parseFlags(AgentFlags, raw);
    const owner = await ownerPolicyOf(flags);
    const { plan, examples } = await H.planForOwner(toAgentOptions(flags, owner));
    stdout(flags.json ? `${JSON.stringify({ ...plan, examples })}\n` : `${H.formatPlan(plan, examples)}\n`);
  });

  agentOptions(
    agent
      .command('collect')
      .description('Compute the statistics of the plan and write them as a verified bundle (statistics.safetensors + manifest.json)'),
  )
    .requiredOption('--out <dir>', 'the bundle directory to create (never overwritten)')
    .action(async (raw: Record<string, unknown>) => {
      const flags = parseFlags(AgentFlags, raw);
      const bar = createProgressBar('collect', 'examples', progressEnabled(flags.json));
      let deviceReason = '';
      const { manifest, result } = await H.collectBundle({
        ...toAgentOptions(flags, await ownerPolicyOf(flags)),
        out: flags.out!,
        onProgress: (p) => bar.update(p.examples, p.total),
        onDevice: (reason) => (deviceReason = reason),
      });
      bar.stop();
      if (flags.json) {
        stdout(
          `${JSON.stringify({ bundle: flags.out, device: result.device, seconds: result.seconds, examples: result.statistics.examples, tokens: result.statistics.tokens, plan: manifest.plan })}\n`,
        );
      } else {
        stdout(
          `${H.formatPlan(manifest.plan, result.statistics.examples)}\n\ndevice: ${deviceReason}\ncollected ${result.statistics.examples} examples, ${result.statistics.tokens} tokens in ${result.seconds.toFixed(1)} s (${(result.statistics.tokens / result.seconds).toFixed(0)} tokens/s)\nbundle ${flags.out} (${H.formatBytes(manifest.plan.totals.bytes)}): statistics.safetensors + manifest.json with a SHA-256 per statistic\n`,
        );
      }
    });

  /** mTLS flags; a client also takes --identity (what it claims in insecure loopback mode), a server does not. */
  const tlsOptions = (command: Command, role: 'client' | 'server' = 'client'): Command => {
    command
      .option('--tls-ca <path>', 'the federation CA certificate (PEM)')
      .option('--tls-cert <path>', "this party's certificate (PEM); its subject is its identity")
      .option('--tls-key <path>', "this party's private key (PEM, mode 0600)")
      .option('--insecure-loopback', 'plain text on 127.0.0.1 only, for local experiments (says so in every log line)');
    return role === 'client' ? command.option('--identity <name>', 'with --insecure-loopback: the identity to claim') : command;
  };

  const certs = program.command('certs').description('Federation certificates (ECDSA P-256, made with @peculiar/x509)');
  certs
    .command('init')
    .description('Create the federation CA (ca.pem, ca-key.pem) in a directory')
    .requiredOption('--dir <dir>', 'where to write them')
    .option('--name <cn>', 'CA common name', 'gramfuse federation CA')
    .action(async (raw: { dir: string; name: string }) => {
      stdout(`${(await H.certsInit(raw.dir, raw.name)).join('\n')}\n`);
    });
  certs
    .command('issue')
    .description(
      'Issue a certificate signed by the CA in --dir; the name is the identity (an agent, a job creator, or the coordinator with --host)',
    )
    .requiredOption('--dir <dir>', 'the CA directory (from certs init)')
    .requiredOption('--name <cn>', 'identity: the certificate subject common name')
    .option('--host <name>', 'also a server certificate for this host name or IP (repeatable)', collect)
    .action(async (raw: { dir: string; name: string; host?: string[] }) => {
      stdout(`${(await H.certsIssue(raw.dir, raw.name, raw.host ?? [])).join('\n')}\n`);
    });

  tlsOptions(
    program
      .command('coordinator')
      .description("The party that sums the owners' statistics and solves: gramfuse coordinator serve")
      .command('serve')
      .description('Run the coordinator: jobs, verified uploads, receipts, solve, results (state survives restarts)')
      .requiredOption('--listen <host:port>', 'address to listen on (port 0: any free port)')
      .requiredOption('--state <dir>', 'durable state directory')
      .option(
        '--creators <names>',
        'comma-separated identities allowed to create jobs (default: none; the coordinator then serves only existing jobs)',
      )
      .option('--max-open-jobs-per-creator <n>', 'jobs one creator may have open at once (RESOURCE_EXHAUSTED past it)', '16')
      .option('--max-concurrent-solves <n>', 'solves run at once; later ones wait their turn', '1')
      .option(
        '--template-dir <dir>',
        'a directory whose files job creators may name as templates (job create --template-on-coordinator); repeatable',
        collect,
      )
      .option('--nats <url>', 'NATS with JetStream: job events on gramfuse.jobs.<job>.*, audit records mirrored to GRAMFUSE_AUDIT')
      .option('--json', 'print the listening address as one JSON line on stdout (log lines stay plain text on stderr)'),
    'server',
  ).action(
    async (
      raw: TlsFlags & {
        listen: string;
        state: string;
        creators?: string;
        templateDir?: string[];
        maxOpenJobsPerCreator: string;
        maxConcurrentSolves: string;
        nats?: string;
        json?: boolean;
      },
    ) => {
      const limits = parseFlags(CoordinatorLimitFlags, {
        maxOpenJobsPerCreator: raw.maxOpenJobsPerCreator,
        maxConcurrentSolves: raw.maxConcurrentSolves,
      });
      const insecure = raw.insecureLoopback === true;
      const log = (line: string): void => {
        process.stderr.write(`${insecure ? '[INSECURE LOOPBACK] ' : ''}${line}\n`);
      };
      const server = await H.startCoordinatorServer({
        stateDir: raw.state,
        listen: raw.listen,
        log,
        ...(insecure ? { insecureLoopback: true } : { tls: await H.loadTls(raw) }),
        ...(raw.creators === undefined
          ? {}
          : {
              creators: raw.creators
                .split(',')
                .map((c) => c.trim())
                .filter((c) => c !== ''),
            }),
        ...(raw.templateDir === undefined ? {} : { templateDirs: raw.templateDir }),
        ...limits,
        ...(raw.nats === undefined ? {} : { nats: raw.nats }),
      });
      const host = raw.listen.slice(0, raw.listen.lastIndexOf(':'));
      stdout(
        raw.json === true
          ? `${JSON.stringify({ listening: `${host}:${server.port}`, port: server.port, tls: !insecure })}\n`
          : `coordinator listening on ${host}:${server.port}${insecure ? ' (INSECURE LOOPBACK: no TLS)' : ' (mTLS)'}\n`,
      );
      await new Promise<void>((resolve) => {
        const stop = (): void => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      log('draining (hard stop in 10 s)');
      await server.close(10_000);
    },
  );

  const job = program.command('job').description('Create and follow federated merge jobs');
  tlsOptions(
    job
      .command('create')
      .description('Create a job from a spec file (YAML or JSON) and a template model')
      .requiredOption('--coordinator <host:port>', 'coordinator address')
      .requiredOption('--spec <path>', 'job spec (YAML or JSON): id, participants, quorum, merge, policy, limits')
      .requiredOption('--template <path>', 'the template model (.onnx) the merged model takes its graph from')
      .option(
        '--template-on-coordinator',
        "--template names a file inside one of the coordinator's --template-dir directories (large models)",
      )
      .option('--json', 'print one JSON object'),
  ).action(
    async (raw: TlsFlags & { coordinator: string; spec: string; template: string; templateOnCoordinator?: boolean; json?: boolean }) => {
      const client = H.connectFederation(await H.connectOptions(raw.coordinator, raw));
      try {
        let specText: string;
        try {
          specText = await readFile(raw.spec, 'utf8');
        } catch (error) {
          throw fileError(error, raw.spec, 'reading the job spec');
        }
        const template = raw.templateOnCoordinator === true ? { path: raw.template } : await readFile(raw.template);
        const status = await client.createJob(JSON.stringify(H.parseSpecText(specText, raw.spec)), template);
        stdout(
          raw.json === true
            ? `${JSON.stringify({ job: status.jobId, state: status.state, fingerprint: status.fingerprint, participants: status.participants })}\n`
            : `job ${status.jobId}: ${status.state}, fingerprint ${status.fingerprint}, participants ${status.participants.join(', ')}\n`,
        );
      } finally {
        client.close();
      }
    },
  );
  tlsOptions(
    job
      .command('status')
      .description("A job's state, owners complete, result digest")
      .argument('<id>', 'job id')
      .requiredOption('--coordinator <host:port>', 'coordinator address')
      .option('--json', 'print one JSON object'),
  ).action(async (id: string, raw: TlsFlags & { coordinator: string; json?: boolean }) => {
    const client = H.connectFederation(await H.connectOptions(raw.coordinator, raw));
    try {
      const s = await client.getJob(id);
      const view = {
        job: s.jobId,
        state: s.state,
        completed: s.completed,
        quorum: s.quorum,
        participants: s.participants,
        fingerprint: s.fingerprint,
        resultSha256: s.resultSha256 || null,
        failure: s.failureCode === '' ? null : { code: s.failureCode, message: s.failureMessage },
      };
      stdout(
        raw.json === true
          ? `${JSON.stringify(view)}\n`
          : `job ${view.job}: ${view.state}; ${view.completed.length}/${view.quorum} owners complete (${view.completed.join(', ') || 'none'})${view.resultSha256 === null ? '' : `; merged model sha256 ${view.resultSha256}`}${view.failure === null ? '' : `; failed: ${view.failure.code}: ${view.failure.message}`}\n`,
      );
    } finally {
      client.close();
    }
  });
  tlsOptions(
    job
      .command('watch')
      .description("Follow a job's events (state, joins, upload and solve progress, result) until it is done or failed")
      .argument('<id>', 'job id')
      .option('--nats <url>', "follow gramfuse.jobs.<id>.* on NATS (replays the job's earlier events first)")
      .option('--coordinator <host:port>', "or follow the coordinator's status stream over gRPC")
      .option('--timeout <seconds>', 'give up after this long (DEADLINE_EXCEEDED)', '86400')
      .option('--json', 'one JSON object per event'),
  ).action(async (id: string, raw: TlsFlags & { nats?: string; coordinator?: string; timeout: string; json?: boolean }) => {
    if ((raw.nats === undefined) === (raw.coordinator === undefined))
      throw new GramfuseError(ErrorCode.InvalidArgument, 'job watch: give --nats URL or --coordinator HOST:PORT (one of them)');
    const final = await H.watchJob(id, {
      ...(raw.nats === undefined ? {} : { nats: raw.nats }),
      ...(raw.coordinator === undefined ? {} : { connect: await H.connectOptions(raw.coordinator, raw) }),
      timeoutSeconds: Number(raw.timeout),
      onEvent: (event) => stdout(raw.json === true ? `${JSON.stringify(event)}\n` : `${H.formatJobEvent(event)}\n`),
    });
    if (final === 'failed') throw new GramfuseError(ErrorCode.JobClosed, `job ${id} failed (see the events above)`);
  });
  tlsOptions(
    job
      .command('download')
      .description("Download a solved job's merged model (or report)")
      .argument('<id>', 'job id')
      .requiredOption('--coordinator <host:port>', 'coordinator address')
      .requiredOption('--out <path>', 'where to write it')
      .option('--artifact <name>', 'merged.onnx | merged.safetensors | report.json', 'merged.onnx'),
  ).action(async (id: string, raw: TlsFlags & { coordinator: string; out: string; artifact: string }) => {
    const client = H.connectFederation(await H.connectOptions(raw.coordinator, raw));
    try {
      const status = await client.getJob(id);
      const { sha256, bytes } = await client.downloadTo(
        id,
        raw.artifact,
        raw.out,
        raw.artifact === 'merged.onnx' ? status.resultSha256 : undefined,
      );
      stdout(`${raw.out} (${bytes} bytes, sha256 ${sha256}, verified)\n`);
    } finally {
      client.close();
    }
  });

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
      .option('--nats <url>', "also publish this agent's audit records to JetStream (GRAMFUSE_AUDIT)")
      .option(
        '--upload-attempts <n>',
        'tries for an upload whose link drops or whose coordinator is unavailable (backoff with jitter)',
        '5',
      )
      .option('--progress-json', 'write progress as JSON lines on stderr ({"phase","done","total"}), for a program driving the agent'),
  ).action(
    async (
      raw: Record<string, unknown> &
        TlsFlags & {
          coordinator: string;
          job: string;
          workDir: string;
          yes?: boolean;
          chunkBytes: string;
          nats?: string;
          uploadAttempts: string;
          progressJson?: boolean;
        },
    ) => {
      const flags = parseFlags(AgentFlags, raw);
      const owner = await ownerPolicyOf(flags);
      const base = toAgentOptions(flags, owner);
      const show = progressEnabled(flags.json);
      const collectBar = createProgressBar('collect', 'examples', show);
      const uploadBar = createProgressBar('upload', 'bytes', show);
      const progressLine = progressJsonWriter(raw.progressJson === true);
      const result = await H.runAgent({
        ...base,
        connect: await H.connectOptions(raw.coordinator, raw),
        jobId: raw.job,
        workDir: raw.workDir,
        yes: raw.yes === true,
        chunkBytes: Number(raw.chunkBytes),
        ...(raw.nats === undefined ? {} : { nats: raw.nats }),
        uploadAttempts: Math.max(1, Number(raw.uploadAttempts) || 1),
        onRetry: (attempt, error) => {
          if (!flags.json) process.stderr.write(`upload attempt ${attempt} failed (${error.toLine()}); retrying\n`);
        },
        ownerPolicy: owner,
        onPolicy: (effective) => {
          if (!flags.json) process.stderr.write(`${H.formatPolicySources(effective)}\n`);
        },
        onPlan: (plan, examples) => {
          if (!flags.json) process.stderr.write(`${H.formatPlan(plan, examples)}\n\n`);
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
      });
      collectBar.stop();
      uploadBar.stop();
      stdout(
        flags.json
          ? `${JSON.stringify(result)}\n`
          : `uploaded ${result.bytesSent} bytes in ${result.chunksSent} chunks (${result.chunksSkipped} already held); ${result.receipts} signed receipts verified and saved to ${result.receiptsPath}\n`,
      );
    },
  );

  tlsOptions(
    labelledDataOptions(
      agent
        .command('evaluate')
        .description(
          "Federated evaluation: download the job's merged model (SHA-256 verified), evaluate it on this owner's held-out data, report only the metrics (signed into both ledgers)",
        ),
      "the owner's held-out labelled data (.jsonl or .csv); it never leaves this machine",
    )
      .requiredOption('--coordinator <host:port>', 'coordinator address')
      .requiredOption('--job <id>', 'job id')
      .option('--work-dir <dir>', "this agent's work directory (as for agent run)", 'gramfuse-agent')
      .option('--no-report', 'evaluate only; send nothing to the coordinator')
      .option('--json', 'print one JSON object'),
  ).action(async (raw: Record<string, unknown> & TlsFlags & { coordinator: string; job: string; workDir: string; report: boolean }) => {
    const flags = parseFlags(AgentEvaluateFlags, raw);
    const bar = createProgressBar('evaluate', 'examples', progressEnabled(flags.json));
    const result = await H.evaluateForJob({
      connect: await H.connectOptions(raw.coordinator, raw),
      jobId: raw.job,
      workDir: raw.workDir,
      ...labelledData(flags),
      report: raw.report,
      onProgress: (p) => bar.update(p.examples, p.total),
    });
    bar.stop();
    stdout(
      flags.json
        ? `${JSON.stringify(result)}\n`
        : `job ${result.job}: merged model ${result.modelSha256.slice(0, 16)}… on ${result.examples} held-out examples of ${result.owner}: accuracy ${(result.accuracy * 100).toFixed(2)} %, macro-F1 ${(result.macroF1 * 100).toFixed(2)} %${result.reported ? ' (reported to the coordinator, recorded in both ledgers)' : ' (not reported)'}\n`,
    );
  });

  const audit = program.command('audit').description('Prove what was shared: verify and read audit ledgers offline');
  audit
    .command('verify')
    .description(
      "Check a ledger's hash chain and every signature; fails naming the first changed, missing, reordered, inserted or partial record",
    )
    .option('--ledger <path>', 'an audit ledger (audit.jsonl)')
    .option('--nats <url>', "instead: every writer's records in the GRAMFUSE_AUDIT JetStream stream")
    .option('--keys <pem>', 'trust only these public keys (repeatable); default: the keys the ledger declares', collect)
    .action(async (raw: { ledger?: string; nats?: string; keys?: string[] }) => {
      if ((raw.ledger === undefined) === (raw.nats === undefined))
        throw new GramfuseError(ErrorCode.InvalidArgument, 'audit verify: give --ledger FILE or --nats URL (one of them)');
      stdout(`${raw.ledger !== undefined ? await H.auditVerify(raw.ledger, raw.keys) : await H.auditVerifyStream(raw.nats!, raw.keys)}\n`);
    });
  audit
    .command('publish')
    .description("Publish a ledger's records that are not on NATS yet (an agent that ran while NATS was down)")
    .requiredOption('--ledger <path>', 'an audit ledger (audit.jsonl)')
    .requiredOption('--nats <url>', 'NATS with JetStream')
    .option('--timeout <seconds>', 'give up after this long', '60')
    .action(async (raw: { ledger: string; nats: string; timeout: string }) => {
      stdout(`${await H.auditPublish(raw.ledger, raw.nats, Number(raw.timeout))}\n`);
    });
  audit
    .command('reconcile')
    .description("Show that an agent's and the coordinator's ledgers agree: every receipt matches a committed statistic, byte for byte")
    .requiredOption('--agent-ledger <path>', "the agent's audit.jsonl")
    .requiredOption('--coordinator-ledger <path>', "the coordinator's audit.jsonl")
    .option('--keys <pem>', 'trust only these public keys (repeatable)', collect)
    .option('--json', 'print one JSON object')
    .action(async (raw: { agentLedger: string; coordinatorLedger: string; keys?: string[]; json?: boolean }) => {
      const result = await H.auditReconcile(raw.agentLedger, raw.coordinatorLedger, raw.keys);
      stdout(raw.json === true ? `${JSON.stringify(result)}\n` : `${H.formatReconciliation(result)}\n`);
      if (!result.agree)
        throw new GramfuseError(
          ErrorCode.AuditInvalid,
          `the ledgers disagree on ${result.rows.filter((r) => r.status !== 'match').length} statistics`,
        );
    });
  audit
    .command('report')
    .description('What left an owner, when, in which job, and which merged models used it')
    .requiredOption('--ledger <path>', 'an audit ledger (coordinator or agent)')
    .requiredOption('--owner <id>', 'owner identity')
    .option('--keys <pem>', 'trust only these public keys (repeatable)', collect)
    .option('--json', 'print one JSON object')
    .action(async (raw: { ledger: string; owner: string; keys?: string[]; json?: boolean }) => {
      const report = await H.auditReport(raw.ledger, raw.owner, raw.keys);
      stdout(raw.json === true ? `${JSON.stringify(report)}\n` : `${H.formatOwnerReport(report, raw.ledger)}\n`);
    });

  program
    .command('demo')
    .description(
      'A coordinator and three agents on loopback (mTLS, certificates made in a temp dir) merge the shipped example models with RegMean, then evaluate',
    )
    .option('--out <dir>', 'keep everything in this directory (default: a new temp dir)')
    .option('--json', 'print one JSON object')
    .action(async (raw: { out?: string; json?: boolean }) => {
      const log = (line: string): void => {
        if (raw.json !== true) process.stderr.write(`demo: ${line}\n`);
      };
      const result = await H.runDemo({ log, ...(raw.out === undefined ? {} : { out: raw.out }) });
      if (raw.json === true) {
        stdout(`${JSON.stringify(result)}\n`);
        return;
      }
      stdout(
        [
          H.formatDemoTable(result),
          '',
          `merged model   ${result.mergedModel}`,
          `merge report   ${result.report}`,
          `audit ledger (coordinator)  ${result.ledgers.coordinator}`,
          `audit ledgers (agents)      ${result.ledgers.agents.join(', ')}`,
          ...result.verify,
          `${result.seconds.toFixed(0)} s in all`,
          '',
        ].join('\n'),
      );
    });

  return program;
}

async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version are "errors" to commander; they already printed.
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.exitCode === 0) return 0;
      return exitCodeByErrorCode[ErrorCode.InvalidArgument];
    }
    const coded = toGramfuseError(error);
    process.stderr.write(`gramfuse: ${coded.toLine()}\n`);
    if (!(error instanceof GramfuseError) && process.env.GRAMFUSE_DEBUG !== undefined)
      process.stderr.write(`${String((error as Error).stack)}\n`);
    return exitCodeByErrorCode[coded.code];
  }
}

process.exit(await main(process.argv));
