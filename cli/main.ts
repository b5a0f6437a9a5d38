#!/usr/bin/env node
// The CLI entry: registration only, and the only place that calls process.exit. Each command group is declared in
// cli/commands/<group>.ts; what a command runs is imported inside its action, so `--help` stays light
// and each command loads only its own code.
// Errors are mapped to exit codes by the one table in shared/errors.ts.

import { Command, CommanderError } from 'commander';

import { ErrorCode, exitCodeByErrorCode, GramfuseError, toGramfuseError } from '../shared/errors.js';
import { packageVersion } from '../shared/version.js';
import { registerAgentCommands } from './commands/agent.js';
import { registerAuditCommands } from './commands/audit.js';
import { registerDashboardCommand } from './commands/dashboard.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerDoctorCommand } from './commands/doctor.js';
import { registerFederationCommands } from './commands/federation.js';
import { registerLocalCommands } from './commands/local.js';
import { registerSolverCommands } from './commands/solver.js';

function buildProgram(): Command {
  const program = new Command('gramfuse')
    .description('Fuse fine-tuned models across organizations with RegMean, without moving their data.')
    .version(packageVersion())
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) });

  registerLocalCommands(program);
  registerAgentCommands(program);
  registerFederationCommands(program);
  registerSolverCommands(program);
  registerAuditCommands(program);
  registerDashboardCommand(program);
  registerDemoCommand(program);
  registerDoctorCommand(program);
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

const code = await main(process.argv);
// process.exit does not wait for a pipe to take what was written: past 64 KiB a `--json` object would be cut short.
await Promise.all([process.stdout, process.stderr].map((stream) => new Promise<void>((resolve) => stream.write('', () => resolve()))));
process.exit(code);
