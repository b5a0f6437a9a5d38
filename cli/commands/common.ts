// What the command modules share: stdout and the flag groups more than one command declares. What a command runs is
// imported inside its action (`await import(...)`), so each command loads only its own code and `--help` loads none.
import type { Command } from 'commander';

import type { z } from 'zod';

import { commonDataFlags, type LabelledDataFlags } from '../flags.js';
import { EMPTY, type InputFile } from '../input-files.js';

/**
 * A flag's default as commander shows it in --help and hands it on: read from the flag's zod type, where the default
 * is declared (once). Small numbers are shown as written in code (1e-6, not 0.000001).
 */
export const zodDefault = (type: z.ZodType): string => {
  const value: unknown = type.parse(undefined);
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return value !== 0 && Math.abs(value) < 1e-3 ? value.toExponential() : String(value);
  // A registration mistake, not bad input: commander would show `undefined`, or an array or object as text.
  throw new Error(`zodDefault: this flag has no string or number default in its zod type (got ${JSON.stringify(value)})`);
};

export const stdout = (text: string): void => {
  process.stdout.write(text);
};

/** A repeatable flag's values. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** The labelled-data flags `eval` and `agent evaluate` share. */
export const labelledDataOptions = (command: Command, data: string): Command =>
  command
    .requiredOption('--data <path>', data)
    .option('--tokenizer <path>', "HuggingFace tokenizer.json (default: a Hugging Face --model directory's)")
    .option('--labels <path>', "JSON list of labels in logit order (default: the model's labels metadata)")
    .option('--max-examples <n>', 'evaluate a seeded random subset')
    .option('--seed <n>', 'seed of that subset', zodDefault(commonDataFlags.seed))
    .option('--max-length <n>', 'tokens per example', zodDefault(commonDataFlags.maxLength))
    .option('--text-field <name>', 'field holding the text', zodDefault(commonDataFlags.textField))
    .option('--label-field <name>', 'field holding the label', zodDefault(commonDataFlags.labelField))
    .option('--threads <n>', 'onnxruntime threads');
/** Those flags' files, for checkInputFiles. */
export const labelledDataInputs = (flags: z.infer<typeof LabelledDataFlags>): InputFile[] => [
  { flag: '--data', path: flags.data, empty: EMPTY.data },
  { flag: '--tokenizer', path: flags.tokenizer, empty: EMPTY.tokenizer },
  { flag: '--labels', path: flags.labels, empty: EMPTY.labels },
];
/** Those flags, parsed, as evaluation options. */
export const labelledData = (flags: z.infer<typeof LabelledDataFlags>) => ({
  data: flags.data,
  tokenizer: flags.tokenizer,
  seed: flags.seed,
  maxLength: flags.maxLength,
  textField: flags.textField,
  labelField: flags.labelField,
  ...(flags.labels === undefined ? {} : { labels: flags.labels }),
  ...(flags.maxExamples === undefined ? {} : { maxExamples: flags.maxExamples }),
  ...(flags.threads === undefined ? {} : { threads: flags.threads }),
});

/** The merge settings a local merge and an agent's plan/collect share (they must agree for a bundle to merge). */
export const mergeSpecOptions = (command: Command, options: { alphaAuto?: boolean } = {}): Command =>
  command
    .option('--method <name>', 'regmean | average | task-arithmetic | ties', 'regmean')
    .option(
      '--alpha <a>',
      `RegMean: G̃ = αG + (1−α)diag(G), in [0, 1]${options.alphaAuto === true ? "; auto: each --alpha-grid candidate solved from one set of statistics, the best on the owners' --validation-data kept" : ''}`,
      '0.9',
    )
    .option('--weighting <w>', 'equal (each owner counts the same) | tokens (weighted by rows)', 'equal')
    .option('--include-padding', 'count padding tokens in Grams (the reference code does)');

/** How examples are read and batched: a local merge and an agent share these. */
export const collectionOptions = (command: Command): Command =>
  command
    .option('--max-examples <n>', 'use a seeded random subset of at most n examples per owner')
    .option('--seed <n>', 'seed of that subset', zodDefault(commonDataFlags.seed))
    .option('--batch-size <n>', 'examples per batch', zodDefault(commonDataFlags.batchSize))
    .option('--max-length <n>', 'tokens per example, special tokens included', zodDefault(commonDataFlags.maxLength))
    .option('--text-field <name>', 'field holding the text', zodDefault(commonDataFlags.textField))
    .option('--threads <n>', 'onnxruntime threads')
    .option(
      '--memory-budget <size>',
      "memory for one collection pass's Gram accumulators (e.g. 8GB); groups that do not fit together take more passes over the data (default: half of the free memory)",
    );

/**
 * How a command that connects to NATS proves the server and itself (docs/SECURITY.md, "NATS"): TLS with the
 * federation CA and the credentials of its role. Without them a NATS connection is plaintext and anonymous, fit only
 * for a local nats-server on loopback.
 */
export const natsSecurityOptions = (command: Command): Command =>
  command
    .option('--nats-tls-ca <path>', "NATS over TLS: the CA certificate (PEM) the server's certificate chains to (the federation CA)")
    .option('--nats-tls-cert <path>', 'a client certificate (PEM) for a NATS server that verifies clients')
    .option('--nats-tls-key <path>', "that certificate's private key (PEM, mode 0600)")
    .option('--nats-creds <path>', "this role's NATS credentials: a .creds file or an NKEY user seed file (mode 0600)")
    .option('--nats-user <name>', 'or a NATS user name; its password is read from GRAMFUSE_NATS_PASSWORD');

/** mTLS flags; a client also takes --identity (what it claims in insecure loopback mode), a server does not. */
export const tlsOptions = (command: Command, role: 'client' | 'server' = 'client'): Command => {
  command
    .option('--tls-ca <path>', 'the federation CA certificate (PEM)')
    .option('--tls-cert <path>', "this party's certificate (PEM); its subject is its identity")
    .option('--tls-key <path>', "this party's private key (PEM, mode 0600)")
    .option('--insecure-loopback', 'plain text on 127.0.0.1 only, for local experiments (says so in every log line)');
  return role === 'client' ? command.option('--identity <name>', 'with --insecure-loopback: the identity to claim') : command;
};
