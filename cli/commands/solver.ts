import type { Command } from 'commander';

import { natsTarget, SolverServeFlags } from '../federation-flags.js';
import { parseFlags } from '../flags.js';
import { checkInputFiles, tlsInputs } from '../input-files.js';
import { natsSecurityOptions, stdout, tlsOptions, zodDefault } from './common.js';

export function registerSolverCommands(program: Command): void {
  tlsOptions(
    natsSecurityOptions(
      program
        .command('solver')
        .description('A solver worker for a coordinator started with --solvers nats: gramfuse solver serve')
        .command('serve')
        .description(
          "Pull solve tasks (one per Gram group) from NATS JetStream, fetch the group's sums from the coordinator over gRPC, solve, submit X",
        )
        .requiredOption('--coordinator <host:port>', 'coordinator address (mTLS; this certificate must be one of its --solver-identities)')
        .requiredOption('--nats <url>', 'the NATS server (with JetStream) the coordinator publishes solve tasks on')
        .option(
          '--device <device>',
          'auto (CUDA when its provider loads, else CPU) | cpu | cuda',
          zodDefault(SolverServeFlags.shape.device),
        )
        .option('--threads <n>', 'onnxruntime threads of the solve (default: all cores)')
        .option(
          '--solve-timeout <seconds>',
          'watchdog: a solve that has not answered this long is reported failed and its task released',
          zodDefault(SolverServeFlags.shape.solveTimeout),
        )
        .option('--json', 'one JSON object per task answered on stdout (log lines stay on stderr)'),
    ),
  ).action(async (raw: Record<string, unknown>) => {
    const flags = parseFlags(SolverServeFlags, raw);
    await checkInputFiles(tlsInputs(flags));
    const log = (line: string): void => {
      process.stderr.write(`${flags.insecureLoopback === true ? '[INSECURE LOOPBACK] ' : ''}${line}\n`);
    };
    const { startSolver } = await import('../../solver/index.js');
    const { connectOptions } = await import('../federation-commands.js');
    const solver = await startSolver({
      coordinator: await connectOptions(flags.coordinator, flags),
      nats: natsTarget(flags)!,
      device: flags.device,
      ...(flags.threads === undefined ? {} : { threads: flags.threads }),
      solveTimeoutMs: flags.solveTimeout * 1000,
      log,
      ...(flags.json ? { onTask: (record) => stdout(`${JSON.stringify(record)}\n`) } : {}),
    });
    await Promise.race([
      solver.stopped,
      new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      }),
    ]);
    log('stopping (finishing the task in hand)');
    await solver.stop();
  });
}
