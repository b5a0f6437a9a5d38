import type { Command } from 'commander';

import { ErrorCode, GramfuseError } from '../../shared/errors.js';
import { AuditPublishFlags, AuditReconcileFlags, AuditReportFlags, AuditVerifyFlags, natsTarget } from '../federation-flags.js';
import { parseFlags } from '../flags.js';
import { checkInputFiles, EMPTY } from '../input-files.js';
import { collect, natsSecurityOptions, stdout, zodDefault } from './common.js';

export function registerAuditCommands(program: Command): void {
  const audit = program.command('audit').description('Prove what was shared: verify and read audit ledgers offline');
  natsSecurityOptions(
    audit
      .command('verify')
      .description(
        "Check a ledger's hash chain and every signature; fails naming the first changed, missing, reordered, inserted or partial record",
      )
      .option('--ledger <path>', 'an audit ledger (audit.jsonl)')
      .option('--nats <url>', "instead: every writer's records in the GRAMFUSE_AUDIT JetStream stream")
      .option('--keys <pem>', 'trust only these public keys (repeatable); default: the keys the ledger declares', collect),
  ).action(async (raw: Record<string, unknown>) => {
    const flags = parseFlags(AuditVerifyFlags, raw);
    await checkInputFiles([
      { flag: '--ledger', path: flags.ledger, empty: EMPTY.ledger },
      { flag: '--keys', path: flags.keys, empty: EMPTY.keys },
    ]);
    // A ledger file needs only the ledger code; the stream needs a NATS client.
    const line =
      flags.ledger !== undefined
        ? await (await import('../audit-commands.js')).auditVerify(flags.ledger, flags.keys)
        : await (await import('../audit-stream.js')).auditVerifyStream(natsTarget(flags)!, flags.keys);
    stdout(`${line}\n`);
  });
  natsSecurityOptions(
    audit
      .command('publish')
      .description("Publish a ledger's records that are not on NATS yet (an agent that ran while NATS was down)")
      .requiredOption('--ledger <path>', 'an audit ledger (audit.jsonl)')
      .requiredOption('--nats <url>', 'NATS with JetStream')
      .option('--timeout <seconds>', 'give up after this long', zodDefault(AuditPublishFlags.shape.timeout)),
  ).action(async (raw: Record<string, unknown>) => {
    const flags = parseFlags(AuditPublishFlags, raw);
    await checkInputFiles([{ flag: '--ledger', path: flags.ledger, empty: EMPTY.ledger }]);
    const { auditPublish } = await import('../audit-stream.js');
    stdout(`${await auditPublish(flags.ledger, natsTarget(flags)!, flags.timeout)}\n`);
  });
  audit
    .command('reconcile')
    .description("Show that an agent's and the coordinator's ledgers agree: every receipt matches a committed statistic, byte for byte")
    .requiredOption('--agent-ledger <path>', "the agent's audit.jsonl")
    .requiredOption('--coordinator-ledger <path>', "the coordinator's audit.jsonl")
    .option('--keys <pem>', 'trust only these public keys (repeatable)', collect)
    .option('--json', 'print one JSON object')
    .action(async (raw: Record<string, unknown>) => {
      const flags = parseFlags(AuditReconcileFlags, raw);
      await checkInputFiles([
        { flag: '--agent-ledger', path: flags.agentLedger, empty: EMPTY.ledger },
        { flag: '--coordinator-ledger', path: flags.coordinatorLedger, empty: EMPTY.ledger },
        { flag: '--keys', path: flags.keys, empty: EMPTY.keys },
      ]);
      const { auditReconcile, formatReconciliation } = await import('../audit-commands.js');
      const result = await auditReconcile(flags.agentLedger, flags.coordinatorLedger, flags.keys);
      stdout(flags.json ? `${JSON.stringify(result)}\n` : `${formatReconciliation(result)}\n`);
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
    .action(async (raw: Record<string, unknown>) => {
      const flags = parseFlags(AuditReportFlags, raw);
      await checkInputFiles([
        { flag: '--ledger', path: flags.ledger, empty: EMPTY.ledger },
        { flag: '--keys', path: flags.keys, empty: EMPTY.keys },
      ]);
      const { auditReport, formatOwnerReport } = await import('../audit-commands.js');
      const report = await auditReport(flags.ledger, flags.owner, flags.keys);
      stdout(flags.json ? `${JSON.stringify(report)}\n` : `${formatOwnerReport(report, flags.ledger)}\n`);
    });
}
