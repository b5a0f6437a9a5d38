#!/usr/bin/env node
// The CLI entry: the only place that calls process.exit. Commands live beside it (cli/), in agent/
// and in coordinator/; errors are mapped to exit codes by the one table in shared/errors.ts.
import { Command, CommanderError, Option } from 'commander';

import { ErrorCode, exitCodeByErrorCode, GramfuseError, toGramfuseError } from '../shared/index.js';
import { inspectCommand } from './inspect.js';
import { packageVersion } from './output.js';

const stdout = (text: string): void => {
  process.stdout.write(text);
};

function buildProgram(): Command {
  const program = new Command('gramfuse')
    .description('Fuse fine-tuned models across organizations with RegMean, without moving their data.')
    .version(packageVersion())
    .exitOverride()
    .configureOutput({ writeErr: (text) => process.stderr.write(text) });

  program
    .command('inspect')
    .description('Show the linear layers, Gram groups, row rules and fingerprint gramfuse finds in a model')
    .argument('<model>', 'path to an .onnx file')
    .addOption(new Option('--json', 'print one JSON object'))
    .action(async (model: string, options: { json?: boolean }) => {
      await inspectCommand(model, options, stdout);
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
