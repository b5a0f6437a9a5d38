import { readFile } from 'node:fs/promises';

import type { Command } from 'commander';

import type { TlsFlags } from '../federation-commands.js';
import { ErrorCode, fileError, GramfuseError } from '../../shared/errors.js';
import { CoordinatorLimitFlags, parseFlags, TimeoutFlags } from '../flags.js';
import { collect, h, stdout, tlsOptions } from './common.js';

export function registerFederationCommands(program: Command): void {
  const certs = program.command('certs').description('Federation certificates (ECDSA P-256, made with @peculiar/x509)');
  certs
    .command('init')
    .description('Create the federation CA (ca.pem, ca-key.pem) in a directory')
    .requiredOption('--dir <dir>', 'where to write them')
    .option('--name <cn>', 'CA common name', 'gramfuse federation CA')
    .action(async (raw: { dir: string; name: string }) => {
      stdout(`${(await h().certsInit(raw.dir, raw.name)).join('\n')}\n`);
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
      stdout(`${(await h().certsIssue(raw.dir, raw.name, raw.host ?? [])).join('\n')}\n`);
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
      const server = await h().startCoordinatorServer({
        stateDir: raw.state,
        listen: raw.listen,
        log,
        ...(insecure ? { insecureLoopback: true } : { tls: await h().loadTls(raw) }),
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
      const client = h().connectFederation(await h().connectOptions(raw.coordinator, raw));
      try {
        let specText: string;
        try {
          specText = await readFile(raw.spec, 'utf8');
        } catch (error) {
          throw fileError(error, raw.spec, 'reading the job spec');
        }
        const template = raw.templateOnCoordinator === true ? { path: raw.template } : await readFile(raw.template);
        const status = await client.createJob(JSON.stringify(h().parseSpecText(specText, raw.spec)), template);
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
    const client = h().connectFederation(await h().connectOptions(raw.coordinator, raw));
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
    const final = await h().watchJob(id, {
      ...(raw.nats === undefined ? {} : { nats: raw.nats }),
      ...(raw.coordinator === undefined ? {} : { connect: await h().connectOptions(raw.coordinator, raw) }),
      timeoutSeconds: parseFlags(TimeoutFlags, { timeout: raw.timeout }).timeout,
      onEvent: (event) => stdout(raw.json === true ? `${JSON.stringify(event)}\n` : `${h().formatJobEvent(event)}\n`),
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
    const client = h().connectFederation(await h().connectOptions(raw.coordinator, raw));
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
}
