import type { Command } from 'commander';

import { DemoFlags } from '../federation-flags.js';
import { parseFlags } from '../flags.js';
import { stdout } from './common.js';

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description(
      'A coordinator and three agents on loopback (mTLS, certificates made in a temp dir) merge the shipped example models with RegMean, then evaluate',
    )
    .option('--out <dir>', 'keep everything in this directory (default: a new temp dir)')
    .option(
      '--secure-aggregation',
      "run the job with secure aggregation (the coordinator sees only masked statistics and their sum) and print the largest relative difference to the plaintext merge of the same owners' statistics",
    )
    .option('--json', 'print one JSON object')
    .action(async (raw: Record<string, unknown>) => {
      const flags = parseFlags(DemoFlags, raw);
      const log = (line: string): void => {
        if (!flags.json) process.stderr.write(`demo: ${line}\n`);
      };
      const { formatDemoTable, runDemo } = await import('../demo.js');
      const result = await runDemo({
        log,
        secureAggregation: flags.secureAggregation,
        ...(flags.out === undefined ? {} : { out: flags.out }),
      });
      if (flags.json) {
        stdout(`${JSON.stringify(result)}\n`);
        return;
      }
      stdout(
        [
          formatDemoTable(result),
          '',
          ...(result.maxRelDiffVsPlain === undefined
            ? []
            : [
                `secure aggregation: the coordinator held only masked statistics and their sum; largest relative difference of a merged parameter to the plaintext merge of the same statistics: ${result.maxRelDiffVsPlain.toExponential(2)}`,
                '',
              ]),
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
}
