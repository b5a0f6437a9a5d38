import { readFile } from 'node:fs/promises';

import type { Command } from 'commander';

import type { MergeReport } from '../../shared/merge/index.js';

import { ErrorCode, fileError, GramfuseError } from '../../shared/errors.js';
import {
  CertsInitFlags,
  CertsIssueFlags,
  CoordinatorServeFlags,
  JobCreateFlags,
  JobDownloadFlags,
  JobStatusFlags,
  JobWatchFlags,
  natsOption,
} from '../federation-flags.js';
import { parseFlags } from '../flags.js';
import { checkInputFiles, EMPTY, tlsInputs } from '../input-files.js';
import { collect, natsSecurityOptions, stdout, tlsOptions, zodDefault } from './common.js';

export function registerFederationCommands(program: Command): void {
  const certs = program.command('certs').description('Federation certificates (ECDSA P-256, made with @peculiar/x509)');
  certs
    .command('init')
    .description('Create the federation CA (ca.pem, ca-key.pem) in a directory')
    .requiredOption('--dir <dir>', 'where to write them')
    .option('--name <cn>', 'CA common name', zodDefault(CertsInitFlags.shape.name))
    .action(async (raw: Record<string, unknown>) => {
      const flags = parseFlags(CertsInitFlags, raw);
      const { certsInit } = await import('../federation-commands.js');
      stdout(`${(await certsInit(flags.dir, flags.name)).join('\n')}\n`);
    });
  certs
    .command('issue')
    .description(
      'Issue a certificate signed by the CA in --dir; the name is the identity (an agent, a job creator, or the coordinator with --host)',
    )
    .requiredOption('--dir <dir>', 'the CA directory (from certs init)')
    .requiredOption('--name <cn>', 'identity: the certificate subject common name')
    .option('--host <name>', 'a server certificate for this host name or IP (repeatable)', collect)
    .option(
      '--role <role>',
      'what the certificate is for: owner, server, creator, solver or observer (default: server with --host, owner without); secure aggregation accepts only owner certificates as peers',
    )
    .action(async (raw: Record<string, unknown>) => {
      const flags = parseFlags(CertsIssueFlags, raw);
      await checkInputFiles([{ flag: '--dir', path: flags.dir, kind: 'directory' }]);
      const { certsIssue } = await import('../federation-commands.js');
      stdout(`${(await certsIssue(flags.dir, flags.name, flags.host, flags.role)).join('\n')}\n`);
    });

  tlsOptions(
    natsSecurityOptions(
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
        .option(
          '--max-open-jobs-per-creator <n>',
          'jobs one creator may have open at once (RESOURCE_EXHAUSTED past it)',
          zodDefault(CoordinatorServeFlags.shape.maxOpenJobsPerCreator),
        )
        .option(
          '--max-concurrent-solves <n>',
          'solves run at once; later ones wait their turn',
          zodDefault(CoordinatorServeFlags.shape.maxConcurrentSolves),
        )
        .option(
          '--template-dir <dir>',
          'a directory whose files job creators may name as templates (job create --template-on-coordinator); repeatable',
          collect,
        )
        .option('--nats <url>', 'NATS with JetStream: job events on gramfuse.jobs.<job>.*, audit records mirrored to GRAMFUSE_AUDIT')
        .option(
          '--solvers <where>',
          'in-process (a worker thread here) | nats (solver workers pull one task per Gram group from GRAMFUSE_SOLVE on --nats)',
          zodDefault(CoordinatorServeFlags.shape.solvers),
        )
        .option(
          '--solver-identities <names>',
          'comma-separated identities of solver workers (gramfuse solver serve) allowed to fetch sums and submit solutions',
        )
        .option(
          '--observers <names>',
          "comma-separated read-only identities (auditors, gramfuse dashboard): every job's status and report.json, no merged model",
        )
        .option(
          '--solve-ack-wait <seconds>',
          'JetStream AckWait of a solve task: a worker silent this long loses it to another',
          zodDefault(CoordinatorServeFlags.shape.solveAckWait),
        )
        .option(
          '--solve-max-deliver <n>',
          'deliveries of one solve task before the job fails (SOLVE_FAILED naming the group)',
          zodDefault(CoordinatorServeFlags.shape.solveMaxDeliver),
        )
        .option(
          '--residual-tolerance <r>',
          "the most a worker's relative residual ‖G̃X − R‖/‖R‖ (and its difference from the coordinator's own solve) may be; below it, 64·n·ε·κ̂ at the group's condition",
          zodDefault(CoordinatorServeFlags.shape.residualTolerance),
        )
        .option(
          '--solve-deadline <seconds>',
          'per Gram group: a delivery not answered this long after its worker fetched the sums is published again (at most --solve-max-deliver times, then DEADLINE_EXCEEDED)',
          zodDefault(CoordinatorServeFlags.shape.solveDeadline),
        )
        .option('--json', 'print the listening address as one JSON line on stdout (log lines stay plain text on stderr)'),
    ),
    'server',
  ).action(async (raw: Record<string, unknown>) => {
    const flags = parseFlags(CoordinatorServeFlags, raw);
    await checkInputFiles([...tlsInputs(flags), { flag: '--template-dir', path: flags.templateDir, kind: 'directory' }]);
    const insecure = flags.insecureLoopback === true;
    const log = (line: string): void => {
      process.stderr.write(`${insecure ? '[INSECURE LOOPBACK] ' : ''}${line}\n`);
    };
    const { startCoordinatorServer } = await import('../../coordinator/index.js');
    const { loadTls } = await import('../federation-commands.js');
    const server = await startCoordinatorServer({
      stateDir: flags.state,
      listen: flags.listen,
      log,
      ...(insecure ? { insecureLoopback: true } : { tls: await loadTls(flags) }),
      ...(flags.creators === undefined ? {} : { creators: flags.creators }),
      ...(flags.templateDir === undefined ? {} : { templateDirs: flags.templateDir }),
      maxOpenJobsPerCreator: flags.maxOpenJobsPerCreator,
      maxConcurrentSolves: flags.maxConcurrentSolves,
      ...natsOption(flags),
      solvers: flags.solvers,
      ...(flags.solverIdentities === undefined ? {} : { solverIdentities: flags.solverIdentities }),
      ...(flags.observers === undefined ? {} : { observers: flags.observers }),
      solveQueue: { ackWaitMs: flags.solveAckWait * 1000, maxDeliver: flags.solveMaxDeliver },
      residualTolerance: flags.residualTolerance,
      solveDeadlineMs: flags.solveDeadline * 1000,
    });
    const host = flags.listen.slice(0, flags.listen.lastIndexOf(':'));
    stdout(
      flags.json
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
  });

  const job = program.command('job').description('Create and follow federated merge jobs');
  tlsOptions(
    job
      .command('create')
      .description('Create a job from a spec file (YAML or JSON) and a template model')
      .requiredOption('--coordinator <host:port>', 'coordinator address')
      .requiredOption('--spec <path>', 'job spec (YAML or JSON): id, participants, quorum, merge, policy, limits')
      .requiredOption(
        '--template <path>',
        'the template model (.onnx, or a Hugging Face checkpoint directory: built and sent inline) the merged model takes its graph from',
      )
      .option(
        '--template-on-coordinator',
        "--template names a file inside one of the coordinator's --template-dir directories (large models)",
      )
      .option('--json', 'print one JSON object'),
  ).action(async (raw: Record<string, unknown>) => {
    const flags = parseFlags(JobCreateFlags, raw);
    await checkInputFiles([
      { flag: '--spec', path: flags.spec, empty: EMPTY.config },
      // On the coordinator, --template names a file there: nothing to check here.
      ...(flags.templateOnCoordinator ? [] : [{ flag: '--template', path: flags.template, kind: 'model' as const, empty: EMPTY.model }]),
      ...tlsInputs(flags),
    ]);
    const { connectFederation } = await import('../../client/index.js');
    const { connectOptions, parseSpecText } = await import('../federation-commands.js');
    const { templateBytes } = await import('../hf-export.js');
    const client = connectFederation(await connectOptions(flags.coordinator, flags));
    try {
      let specText: string;
      try {
        specText = await readFile(flags.spec, 'utf8');
      } catch (error) {
        throw fileError(error, flags.spec, 'reading the job spec');
      }
      const template = flags.templateOnCoordinator ? { path: flags.template } : await templateBytes(flags.template);
      const status = await client.createJob(JSON.stringify(parseSpecText(specText, flags.spec)), template);
      stdout(
        flags.json
          ? `${JSON.stringify({ job: status.jobId, state: status.state, fingerprint: status.fingerprint, participants: status.participants })}\n`
          : `job ${status.jobId}: ${status.state}, fingerprint ${status.fingerprint}, participants ${status.participants.join(', ')}\n`,
      );
    } finally {
      client.close();
    }
  });
  tlsOptions(
    job
      .command('status')
      .description("A job's state, owners complete, result digest")
      .argument('<id>', 'job id')
      .requiredOption('--coordinator <host:port>', 'coordinator address')
      .option('--json', 'print one JSON object'),
  ).action(async (id: string, raw: Record<string, unknown>) => {
    const flags = parseFlags(JobStatusFlags, raw);
    const { connectFederation } = await import('../../client/index.js');
    const { connectOptions } = await import('../federation-commands.js');
    const client = connectFederation(await connectOptions(flags.coordinator, flags));
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
        // The job's privacy block: with secureAggregation the coordinator holds masked statistics and their sum only.
        privacy: (s.privacyJson === '' ? { secureAggregation: false } : JSON.parse(s.privacyJson)) as { secureAggregation: boolean },
        failure: s.failureCode === '' ? null : { code: s.failureCode, message: s.failureMessage },
        solveGroups: s.solveGroups.map((g) => ({
          group: g.group,
          state: g.state,
          worker: g.worker,
          attempts: g.attempts,
          lastError: g.lastError,
        })),
      };
      const groups =
        view.solveGroups.length === 0
          ? ''
          : `\nsolve: ${view.solveGroups.filter((g) => g.state === 'committed').length}/${view.solveGroups.length} groups committed\n${view.solveGroups
              .map(
                (g) =>
                  `  ${g.group}: ${g.state}${g.worker === '' ? '' : ` (${g.worker})`}${g.lastError === '' ? '' : `; last error: ${g.lastError}`}`,
              )
              .join('\n')}`;
      stdout(
        flags.json
          ? `${JSON.stringify(view)}\n`
          : `job ${view.job}: ${view.state}${view.privacy.secureAggregation ? ' (secure aggregation)' : ''}; ${view.completed.length}/${view.quorum} owners complete (${view.completed.join(', ') || 'none'})${view.resultSha256 === null ? '' : `; merged model sha256 ${view.resultSha256}`}${view.failure === null ? '' : `; failed: ${view.failure.code}: ${view.failure.message}`}${groups}\n`,
      );
    } finally {
      client.close();
    }
  });
  tlsOptions(
    natsSecurityOptions(
      job
        .command('watch')
        .description("Follow a job's events (state, joins, upload and solve progress, result) until it is done or failed")
        .argument('<id>', 'job id')
        .option('--nats <url>', "follow gramfuse.jobs.<id>.* on NATS (replays the job's earlier events first)")
        .option('--coordinator <host:port>', "or follow the coordinator's status stream over gRPC")
        .option('--timeout <seconds>', 'give up after this long (DEADLINE_EXCEEDED)', zodDefault(JobWatchFlags.shape.timeout))
        .option('--json', 'one JSON object per event'),
    ),
  ).action(async (id: string, raw: Record<string, unknown>) => {
    const flags = parseFlags(JobWatchFlags, raw);
    const { formatJobEvent, watchJob } = await import('../watch.js');
    const { connectOptions } = await import('../federation-commands.js');
    const final = await watchJob(id, {
      ...natsOption(flags),
      onSkipped: (problem) => process.stderr.write(`skipped a record: ${problem.toLine()}\n`),
      ...(flags.coordinator === undefined ? {} : { connect: await connectOptions(flags.coordinator, flags) }),
      timeoutSeconds: flags.timeout,
      onEvent: (event) => stdout(flags.json ? `${JSON.stringify(event)}\n` : `${formatJobEvent(event)}\n`),
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
      .option('--artifact <name>', 'merged.onnx | merged.safetensors | report.json', zodDefault(JobDownloadFlags.shape.artifact))
      .option('--hf-out <dir>', 'also write the merged model as a Hugging Face checkpoint directory')
      .option('--hf-checkpoint <dir>', 'the checkpoint the owners fine-tuned from: config.json, names checked against its keys')
      .option(
        '--hf-model <path>',
        "an owner's ONNX export of --hf-checkpoint, to name the tensors by value (else by the export's structure)",
      )
      .option('--tokenizer <path>', 'tokenizer.json to copy into --hf-out'),
  ).action(async (id: string, raw: Record<string, unknown>) => {
    const flags = parseFlags(JobDownloadFlags, raw);
    await checkInputFiles([
      { flag: '--hf-checkpoint', path: flags.hfCheckpoint, kind: 'directory' },
      { flag: '--hf-model', path: flags.hfModel, empty: EMPTY.model },
      { flag: '--tokenizer', path: flags.tokenizer, empty: EMPTY.tokenizer },
      ...tlsInputs(flags),
    ]);
    const { connectFederation, downloadMergedModel } = await import('../../client/index.js');
    const { connectOptions } = await import('../federation-commands.js');
    const client = connectFederation(await connectOptions(flags.coordinator, flags));
    try {
      if (flags.artifact === 'merged.onnx') {
        const status = await client.getJob(id);
        const hf =
          flags.hfOut === undefined
            ? undefined
            : {
                out: flags.hfOut,
                ...(flags.hfCheckpoint === undefined ? {} : { checkpoint: flags.hfCheckpoint, namesFrom: flags.hfModel ?? 'structure' }),
                ...(flags.tokenizer === undefined ? {} : { tokenizer: flags.tokenizer }),
              };
        // Checked before downloading: a directory that is not empty, or an owner's export that does not match the checkpoint.
        if (hf !== undefined && flags.hfModel !== undefined)
          await (await import('../hf-export.js')).prepareHfExport({ ...hf, template: flags.hfModel });
        const { sha256, bytes, dataFile } = await downloadMergedModel(client, id, flags.out, status.resultSha256);
        stdout(`${flags.out} (${bytes} bytes, sha256 ${sha256}, verified)\n`);
        if (dataFile !== undefined)
          stdout(
            `${dataFile.path} (${dataFile.bytes} bytes of external data, sha256 ${dataFile.sha256}, verified${
              dataFile.renamedFrom === undefined
                ? ''
                : `; the model named it ${JSON.stringify(dataFile.renamedFrom)}, its tensors now point here, so the model file's own SHA-256 differs from the one above`
            })\n`,
          );
        if (hf !== undefined) {
          const report = JSON.parse((await client.download(id, 'report.json')).toString('utf8')) as MergeReport;
          const { exportHfCheckpoint } = await import('../hf-export.js');
          const exported = await exportHfCheckpoint({
            ...hf,
            model: flags.out,
            report,
            provenance: [
              `Job \`${id}\` on coordinator ${flags.coordinator}: merged.onnx SHA-256 \`${sha256}\` (the job's result digest, verified on download); each owner's statistic digests and receipts are in the coordinator's audit ledger (\`gramfuse audit report\`).`,
            ],
          });
          stdout(`Hugging Face checkpoint ${exported.out} (${exported.files.join(', ')})\n`);
        }
      } else {
        const { sha256, bytes } = await client.downloadTo(id, flags.artifact, flags.out);
        stdout(`${flags.out} (${bytes} bytes, sha256 ${sha256}, verified)\n`);
      }
    } finally {
      client.close();
    }
  });
}
