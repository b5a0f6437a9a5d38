// Flags of the federation, certificate, audit and demo commands, each declared once (zod); cli/flags.ts holds the
// local merge's and the agent's.
import { z } from 'zod';

import { ErrorCode, GramfuseError } from '../shared/errors.js';
import type { NatsEndpoint } from '../shared/nats/index.js';

const int = (min: number) => z.coerce.number().int('must be a whole number').min(min, `must be at least ${min}`);
const path = z.string().min(1, 'name a file or directory');
/** HOST:PORT, the host possibly a bracketed IPv6 address. */
export const address = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):\d{1,5}$/, 'must be HOST:PORT (e.g. 127.0.0.1:7443)');
const json = z.boolean().default(false);
const keys = z.array(path).optional();
/** A comma-separated list of certificate identities (`a,b`), blanks dropped; absent stays undefined. */
const identityList = z
  .string()
  .optional()
  .transform((list) =>
    list
      ?.split(',')
      .map((c) => c.trim())
      .filter((c) => c !== ''),
  );

/** --tls-ca/--tls-cert/--tls-key or --insecure-loopback (with --identity for a client). */
export const tls = {
  tlsCa: path.optional(),
  tlsCert: path.optional(),
  tlsKey: path.optional(),
  insecureLoopback: z.boolean().optional(),
  identity: z.string().min(1).optional(),
};

/**
 * NATS and how to reach it securely: --nats URL with --nats-tls-ca (the federation CA; --nats-tls-cert/--nats-tls-key
 * for a client certificate) and the role's credentials, --nats-creds FILE (.creds or NKEY seed, 0600) or --nats-user
 * with the password in GRAMFUSE_NATS_PASSWORD. The server's configuration is deploy/nats-server.conf.
 */
export const natsSecurity = {
  natsCreds: path.optional(),
  natsUser: z.string().min(1).optional(),
  natsTlsCa: path.optional(),
  natsTlsCert: path.optional(),
  natsTlsKey: path.optional(),
};

type NatsFlags = { readonly nats?: string | undefined } & { readonly [K in keyof typeof natsSecurity]?: string | undefined };

/**
 * The NATS endpoint the flags name (undefined without --nats). The password of --nats-user is read from
 * GRAMFUSE_NATS_PASSWORD: a flag would show it to every user of `ps`.
 */
export function natsTarget(flags: NatsFlags, env: NodeJS.ProcessEnv = process.env): NatsEndpoint | undefined {
  if (flags.nats === undefined) {
    const stray = Object.keys(natsSecurity).filter((key) => flags[key as keyof typeof natsSecurity] !== undefined);
    if (stray.length > 0)
      throw new GramfuseError(
        ErrorCode.InvalidArgument,
        `${stray.map((key) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')} without --nats: name the NATS server (--nats URL) or leave them out`,
      );
    return undefined;
  }
  const password = env.GRAMFUSE_NATS_PASSWORD;
  return {
    url: flags.nats,
    ...(flags.natsCreds === undefined ? {} : { creds: flags.natsCreds }),
    ...(flags.natsUser === undefined ? {} : { user: flags.natsUser, ...(password === undefined ? {} : { password }) }),
    ...(flags.natsTlsCa === undefined ? {} : { tlsCa: flags.natsTlsCa }),
    ...(flags.natsTlsCert === undefined ? {} : { tlsCert: flags.natsTlsCert }),
    ...(flags.natsTlsKey === undefined ? {} : { tlsKey: flags.natsTlsKey }),
  };
}

/** `{ nats }` for a command's options when --nats was given, `{}` otherwise (stray --nats-* flags are refused). */
export function natsOption(flags: NatsFlags): { nats?: NatsEndpoint } {
  const nats = natsTarget(flags);
  return nats === undefined ? {} : { nats };
}

export const CertsInitFlags = z.object({ dir: path, name: z.string().min(1).default('gramfuse federation CA') });
export const CertsIssueFlags = z.object({
  dir: path,
  name: z.string().min(1, 'name the identity'),
  host: z.array(z.string().min(1)).default([]),
  role: z.enum(['owner', 'server', 'creator', 'solver', 'observer']).optional(),
});

export const CoordinatorServeFlags = z
  .object({
    ...tls,
    listen: address,
    state: path,
    creators: identityList,
    templateDir: z.array(path).optional(),
    maxOpenJobsPerCreator: int(1).default(16),
    maxConcurrentSolves: int(1).default(1),
    nats: z.string().min(1).optional(),
    ...natsSecurity,
    solvers: z.enum(['in-process', 'nats'], { message: 'must be in-process or nats' }).default('in-process'),
    solverIdentities: identityList,
    observers: identityList,
    solveAckWait: z.coerce.number().positive('must be a positive number of seconds').default(60),
    solveMaxDeliver: int(1).default(5),
    residualTolerance: z.coerce.number().positive('must be a positive number').max(1, 'must be at most 1').default(1e-6),
    solveDeadline: z.coerce.number().positive('must be a positive number of seconds').default(3600),
    json,
  })
  .refine(
    (f) => f.solvers !== 'nats' || f.nats !== undefined,
    '--solvers nats needs --nats URL (the solve tasks go on its JetStream work queue)',
  );

export const SolverServeFlags = z.object({
  ...tls,
  coordinator: address,
  nats: z.string().min(1),
  ...natsSecurity,
  device: z.enum(['auto', 'cpu', 'cuda'], { message: 'must be auto, cpu or cuda' }).default('auto'),
  threads: int(1).optional(),
  solveTimeout: z.coerce.number().positive('must be a positive number of seconds').default(3000),
  json,
});

export const DashboardFlags = z.object({
  ...tls,
  coordinator: address,
  ledger: z.array(path).default([]),
  nats: z.string().min(1).optional(),
  ...natsSecurity,
  listen: address.default('127.0.0.1:8080'),
  json,
});

export const JobCreateFlags = z.object({
  ...tls,
  coordinator: address,
  spec: path,
  template: path,
  templateOnCoordinator: z.boolean().default(false),
  json,
});
export const JobStatusFlags = z.object({ ...tls, coordinator: address, json });
export const JobWatchFlags = z
  .object({
    ...tls,
    nats: z.string().min(1).optional(),
    ...natsSecurity,
    coordinator: address.optional(),
    timeout: z.coerce.number().positive('must be a positive number of seconds').default(86400),
    json,
  })
  .refine(
    (f) => (f.nats === undefined) !== (f.coordinator === undefined),
    'job watch: give --nats URL or --coordinator HOST:PORT (one of them)',
  );
export const JobDownloadFlags = z.object({
  ...tls,
  coordinator: address,
  out: path,
  artifact: z
    .enum(['merged.onnx', 'merged.safetensors', 'report.json'], {
      message: 'must be merged.onnx, merged.safetensors or report.json',
    })
    .default('merged.onnx'),
  hfOut: z.string().min(1).optional(),
  hfCheckpoint: z.string().min(1).optional(),
  hfModel: z.string().min(1).optional(),
  tokenizer: z.string().min(1).optional(),
});

export const AuditVerifyFlags = z
  .object({ ledger: path.optional(), nats: z.string().min(1).optional(), ...natsSecurity, keys })
  .refine((f) => (f.ledger === undefined) !== (f.nats === undefined), 'audit verify: give --ledger FILE or --nats URL (one of them)');
export const AuditPublishFlags = z.object({
  ledger: path,
  nats: z.string().min(1),
  ...natsSecurity,
  timeout: z.coerce.number().positive('must be a positive number of seconds').default(60),
});
export const AuditReconcileFlags = z.object({ agentLedger: path, coordinatorLedger: path, keys, json });
export const AuditReportFlags = z.object({ ledger: path, owner: z.string().min(1), keys, json });

export const DemoFlags = z.object({ out: path.optional(), secureAggregation: z.boolean().default(false), json });
