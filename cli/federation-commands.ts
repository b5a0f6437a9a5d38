import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { parse as parseYaml } from 'yaml';

import { type ClientTls, connectFederation, type ConnectOptions } from '../agent/index.js';
import { type ServerTls } from '../coordinator/index.js';
import { createCertificateAuthority, ErrorCode, fileError, GramfuseError, issueCertificate, MergeSpec } from '../shared/index.js';
import { auditReconcile, auditVerify, formatReconciliation } from './audit-commands.js';
import { runEvaluation } from './evaluate.js';
import { runLocalMerge } from './local-merge.js';

/** TLS flags shared by every command that talks to or serves the federation. */
export interface TlsFlags {
  readonly tlsCa?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly insecureLoopback?: boolean;
  readonly identity?: string;
}

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw fileError(error, path, `reading the ${what}`);
  }
}

export async function loadTls(flags: TlsFlags): Promise<ClientTls & ServerTls> {
  if (flags.tlsCa === undefined || flags.tlsCert === undefined || flags.tlsKey === undefined) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      '--tls-ca, --tls-cert and --tls-key are all required (mTLS); create them with `gramfuse certs init` and `gramfuse certs issue`, or pass --insecure-loopback for a local demo',
    );
  }
  return {
    caPem: await readPem(flags.tlsCa, 'CA certificate'),
    certPem: await readPem(flags.tlsCert, 'certificate'),
    keyPem: await readPem(flags.tlsKey, 'private key'),
  };
}

export async function connectOptions(address: string, flags: TlsFlags): Promise<ConnectOptions> {
  if (flags.insecureLoopback === true) {
    if (flags.identity === undefined)
      throw new GramfuseError(ErrorCode.InvalidArgument, '--identity: insecure loopback mode needs the identity to claim');
    return { address, insecureIdentity: flags.identity };
  }
  return { address, tls: await loadTls(flags) };
}

/** `gramfuse certs init`: a federation CA (its key stays where it is made). */
export async function certsInit(dir: string, name: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const ca = await createCertificateAuthority(name);
  await writeFile(join(dir, 'ca.pem'), ca.certPem);
  await writeFile(join(dir, 'ca-key.pem'), ca.keyPem, { mode: 0o600 });
  return [join(dir, 'ca.pem'), join(dir, 'ca-key.pem')];
}

/** `gramfuse certs issue`: a participant (or, with hosts, the coordinator's server) certificate. */
export async function certsIssue(dir: string, name: string, hosts: readonly string[]): Promise<string[]> {
  const ca = { certPem: await readPem(join(dir, 'ca.pem'), 'CA certificate'), keyPem: await readPem(join(dir, 'ca-key.pem'), 'CA key') };
  const cert = await issueCertificate(ca, name, { hosts });
  await writeFile(join(dir, `${name}.pem`), cert.certPem);
  await writeFile(join(dir, `${name}-key.pem`), cert.keyPem, { mode: 0o600 });
  return [join(dir, `${name}.pem`), join(dir, `${name}-key.pem`)];
}

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), fileURLToPath(import.meta.url).endsWith('.ts') ? '..' : '../..');
const examples = join(repoRoot, 'examples', 'label-skew');
const cliEntry = join(repoRoot, 'dist', 'cli', 'main.js');

export interface DemoResult {
  readonly results: { model: string; accuracy: number; macroF1: number }[];
  readonly mergedModel: string;
  readonly report: string;
  readonly ledgers: { coordinator: string; agents: string[] };
  /** One line per ledger: the result of `gramfuse audit verify`. */
  readonly verify: string[];
  readonly seconds: number;
}

/** `gramfuse demo`: a coordinator and three agents (separate processes) on loopback with mTLS. */
export async function runDemo(options: {
  readonly out?: string;
  readonly log: (line: string) => void;
  readonly maxExamples?: number;
}): Promise<DemoResult> {
  const started = performance.now();
  const dir = options.out ?? (await mkdtemp(join(tmpdir(), 'gramfuse-demo-')));
  await mkdir(dir, { recursive: true });
  const certs = join(dir, 'certs');
  options.log(`demo directory ${dir}: making a federation CA and certificates (coordinator, creator, org0, org1, org2)`);
  await certsInit(certs, 'gramfuse demo CA');
  await certsIssue(certs, 'coordinator', ['localhost', '127.0.0.1']);
  const orgs = ['org0', 'org1', 'org2'];
  for (const name of ['creator', ...orgs]) await certsIssue(certs, name, []);
  const tls = (name: string): string[] => [
    '--tls-ca',
    join(certs, 'ca.pem'),
    '--tls-cert',
    join(certs, `${name}.pem`),
    '--tls-key',
    join(certs, `${name}-key.pem`),
  ];

  const coordinator = spawn(
    process.execPath,
    [cliEntry, 'coordinator', 'serve', '--listen', '127.0.0.1:0', '--state', join(dir, 'coordinator'), '--json', ...tls('coordinator')],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const coordinatorLog: string[] = [];
  coordinator.stderr.setEncoding('utf8').on('data', (d: string) => coordinatorLog.push(d));
  try {
    const port = await new Promise<number>((resolvePort, reject) => {
      const lines = createInterface({ input: coordinator.stdout });
      lines.once('line', (line) => resolvePort((JSON.parse(line) as { port: number }).port));
      coordinator.once('exit', (code) =>
        reject(new GramfuseError(ErrorCode.Unavailable, `the coordinator exited (code ${code}): ${coordinatorLog.join('')}`)),
      );
    });
    const address = `localhost:${port}`;
    options.log(`coordinator listening on ${address} (mTLS)`);
    const creatorTls = await loadTls({
      tlsCa: join(certs, 'ca.pem'),
      tlsCert: join(certs, 'creator.pem'),
      tlsKey: join(certs, 'creator-key.pem'),
    });
    const client = connectFederation({ address, tls: creatorTls });
    try {
      await client.createJob(
        JSON.stringify({ id: 'demo', participants: orgs, merge: { method: 'regmean', alpha: 0.9 } }),
        await readFile(join(examples, 'org0', 'model.onnx')),
      );
      options.log('job demo created: RegMean α 0.9 over org0, org1, org2; starting three agents');
      const agents = orgs.map((org) => {
        const args = [
          cliEntry,
          'agent',
          'run',
          '--coordinator',
          address,
          '--job',
          'demo',
          '--model',
          join(examples, org, 'model.onnx'),
          '--data',
          join(examples, 'data', `${org}.train.jsonl`),
          '--tokenizer',
          join(examples, 'tokenizer.json'),
          '--work-dir',
          join(dir, org),
          '--yes',
          '--json',
          '--device',
          'cpu',
          '--threads',
          '1',
          ...(options.maxExamples === undefined ? [] : ['--max-examples', String(options.maxExamples)]),
          ...tls(org),
        ];
        const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
        let stderr = '';
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        return new Promise<void>((resolveAgent, reject) =>
          child.once('exit', (code) =>
            code === 0 ? resolveAgent() : reject(new GramfuseError(ErrorCode.Internal, `agent ${org} failed: ${stderr.trim()}`)),
          ),
        );
      });
      await Promise.all(agents);
      const final = await client.watch('demo', (s) => options.log(`job demo: ${s.state} (${s.completed.length}/${s.quorum} owners)`));
      if (final.state !== 'done')
        throw new GramfuseError(ErrorCode.SolveFailed, `job demo ${final.state}: ${final.failureCode}: ${final.failureMessage}`);
      const resultDir = join(dir, 'result');
      await mkdir(resultDir, { recursive: true });
      const mergedModel = join(resultDir, 'merged.onnx');
      const report = join(resultDir, 'report.json');
      await writeFile(mergedModel, await client.download('demo', 'merged.onnx'));
      await writeFile(report, await client.download('demo', 'report.json'));
      options.log(`merged model downloaded to ${mergedModel}; evaluating on the English test split`);
      const average = join(resultDir, 'average.onnx');
      await runLocalMerge({
        models: orgs.map((o) => join(examples, o, 'model.onnx')),
        data: [],
        spec: MergeSpec.parse({ method: 'average' }),
        out: average,
      });
      const test = join(examples, 'data', 'test.en.jsonl');
      const tokenizer = join(examples, 'tokenizer.json');
      const results: DemoResult['results'] = [];
      for (const [model, path] of [
        ...orgs.map((o) => [o, join(examples, o, 'model.onnx')] as const),
        ['average', average] as const,
        ['regmean', mergedModel] as const,
      ]) {
        const r = await runEvaluation({ models: [path], data: test, tokenizer, labels: join(examples, 'labels.json') });
        results.push({ model, accuracy: r.accuracy, macroF1: r.macroF1 });
      }
      const ledgers = { coordinator: join(dir, 'coordinator', 'audit.jsonl'), agents: orgs.map((o) => join(dir, o, 'audit.jsonl')) };
      const verify: string[] = [];
      for (const ledger of [ledgers.coordinator, ...ledgers.agents]) verify.push(`audit verify: ${await auditVerify(ledger)}`);
      for (const agentLedger of ledgers.agents)
        verify.push(`audit reconcile: ${formatReconciliation(await auditReconcile(agentLedger, ledgers.coordinator))}`);
      return {
        results,
        mergedModel,
        report,
        ledgers,
        verify,
        seconds: (performance.now() - started) / 1000,
      };
    } finally {
      client.close();
    }
  } finally {
    coordinator.kill('SIGTERM');
  }
}

/** A job spec file's content: YAML (.yaml/.yml) or JSON; the coordinator validates it with zod. */
export function parseSpecText(text: string, path: string): unknown {
  const yaml = /\.ya?ml$/i.test(path);
  try {
    return yaml ? (parseYaml(text) as unknown) : (JSON.parse(text) as unknown);
  } catch (error) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `${path}: not valid ${yaml ? 'YAML' : 'JSON'} (${(error as Error).message.split('\n')[0]})`,
      { facts: { path } },
    );
  }
}
