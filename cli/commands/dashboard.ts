import type { Command } from 'commander';

import { DashboardFlags, natsOption } from '../federation-flags.js';
import { parseFlags } from '../flags.js';
import { checkInputFiles, EMPTY, tlsInputs } from '../input-files.js';
import { collect, natsSecurityOptions, stdout, tlsOptions, zodDefault } from './common.js';

export function registerDashboardCommand(program: Command): void {
  tlsOptions(
    natsSecurityOptions(
      program
        .command('dashboard')
        .description(
          'A read-only web view for operators and auditors: jobs (live), what every owner shared, solve progress and diagnostics, and whether the ledgers verify',
        )
        .requiredOption(
          '--coordinator <host:port>',
          "coordinator address (mTLS; the page shows what this certificate's identity may see: list it in the coordinator's --observers to see every job)",
        )
        .option('--ledger <path>', 'an audit ledger the auditor holds (audit.jsonl of the coordinator or of an agent); repeatable', collect)
        .option('--nats <url>', "NATS: live updates from the coordinator's events, and the GRAMFUSE_AUDIT mirror checked against the files")
        .option(
          '--listen <host:port>',
          'where the page is served (loopback by default: it has no login)',
          zodDefault(DashboardFlags.shape.listen),
        )
        .option('--json', 'print the page address as one JSON line on stdout'),
    ),
  ).action(async (raw: Record<string, unknown>) => {
    const flags = parseFlags(DashboardFlags, raw);
    await checkInputFiles([{ flag: '--ledger', path: flags.ledger, empty: EMPTY.ledger }, ...tlsInputs(flags)]);
    const log = (line: string): void => {
      process.stderr.write(`${line}\n`);
    };
    const { startDashboard } = await import('../../dashboard/index.js');
    const { connectOptions } = await import('../federation-commands.js');
    const dashboard = await startDashboard({
      coordinator: await connectOptions(flags.coordinator, flags),
      ledgers: flags.ledger,
      ...natsOption(flags),
      listen: flags.listen,
      log,
    });
    stdout(flags.json ? `${JSON.stringify({ url: dashboard.url })}\n` : `dashboard on ${dashboard.url} (read-only; Ctrl-C stops it)\n`);
    await new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
    });
    await dashboard.close();
  });
}
