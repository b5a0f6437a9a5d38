import type { Command } from 'commander';
import { z } from 'zod';

import { ErrorCode, GramfuseError } from '../../shared/errors.js';
import { parseByteSize } from '../../shared/index.js';
import { address, natsSecurity, natsTarget } from '../federation-flags.js';
import { parseFlags } from '../flags.js';
import { natsSecurityOptions, stdout } from './common.js';

const size = z
  .string()
  .refine((text) => parseByteSize(text) !== undefined, 'must be a size such as 10GiB, 512MiB or a number of bytes')
  .transform((text) => parseByteSize(text)!);

export const DoctorFlags = z.object({
  role: z.enum(['coordinator', 'agent', 'solver', 'observer'], { message: 'must be coordinator, agent, solver or observer' }),
  tlsCa: z.string().min(1).optional(),
  tlsCert: z.string().min(1).optional(),
  tlsKey: z.string().min(1).optional(),
  coordinator: address.optional(),
  nats: z.string().min(1).optional(),
  ...natsSecurity,
  workDir: z.string().min(1).default('.'),
  minFreeDisk: size,
  minFreeMemory: size,
  json: z.boolean().default(false),
});

export function registerDoctorCommand(program: Command): void {
  natsSecurityOptions(
    program
      .command('doctor')
      .description(
        "Preflight for a service: its certificate (chain, role, names, expiry), key (0600, matches), the coordinator over mTLS, NATS with this role's credentials, free disk and memory, onnxruntime's CUDA provider. One line per check: ok | warn | fail with the fix; exits non-zero (PREFLIGHT_FAILED) when a check fails",
      )
      .requiredOption('--role <role>', 'the service this machine runs: coordinator | agent | solver | observer')
      .option('--tls-ca <path>', 'the federation CA certificate (PEM)')
      .option('--tls-cert <path>', "this service's certificate (PEM)")
      .option('--tls-key <path>', "this service's private key (PEM)")
      .option('--coordinator <host:port>', 'the coordinator to call over mTLS (for the coordinator itself: the address agents dial)')
      .option('--nats <url>', "NATS to connect to with this role's credentials (the --nats-* flags)"),
  )
    .option('--work-dir <dir>', "the directory the service writes (coordinator --state, an agent's work dir)", '.')
    .option('--min-free-disk <size>', 'warn below this much free disk in --work-dir', '10GiB')
    .option('--min-free-memory <size>', 'warn below this much available memory', '2GiB')
    .option('--json', 'one JSON object {checks: [{name, status, detail, fix}]} on stdout')
    .action(async (raw: Record<string, unknown>) => {
      const flags = parseFlags(DoctorFlags, raw);
      const nats = natsTarget(flags);
      const { formatDoctorLine, runDoctor } = await import('../doctor-checks.js');
      const checks = await runDoctor({
        role: flags.role,
        ...(flags.tlsCa === undefined ? {} : { tlsCa: flags.tlsCa }),
        ...(flags.tlsCert === undefined ? {} : { tlsCert: flags.tlsCert }),
        ...(flags.tlsKey === undefined ? {} : { tlsKey: flags.tlsKey }),
        ...(flags.coordinator === undefined ? {} : { coordinator: flags.coordinator }),
        ...(nats === undefined ? {} : { nats }),
        workDir: flags.workDir,
        minFreeDiskBytes: flags.minFreeDisk,
        minFreeMemoryBytes: flags.minFreeMemory,
      });
      stdout(flags.json ? `${JSON.stringify({ checks })}\n` : checks.map((check) => `${formatDoctorLine(check)}\n`).join(''));
      const failed = checks.filter((check) => check.status === 'fail');
      if (failed.length > 0)
        throw new GramfuseError(
          ErrorCode.PreflightFailed,
          `${failed.length} check(s) failed: ${failed.map((check) => check.name).join(', ')}; fix each as its line says and run doctor again`,
          { facts: { failed: failed.length } },
        );
    });
}
