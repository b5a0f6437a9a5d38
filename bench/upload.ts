// bench/upload: MB/s of a statistics upload into a coordinator process (chunking, SHA-256 per chunk on each side,
// the window of chunks in flight, writes, group commits, signed receipts and their verification) against a raw
// grpc-js client stream of the same bytes into a process of its own (4 MiB messages, no hashing, no disk; then
// with the sink writing and fsyncing them; then with SHA-256 on both sides too), plaintext and mTLS, measured in
// the same run on loopback. Two sizes: the fixture bundle (many 131 kB to 2.4 MB
// statistics) and the BERT-base-size bundle (large statistics). A run with the coordinator killed half way
// counts the chunks the agent sent again.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

import * as grpc from '@grpc/grpc-js';

import { collectBundle, ownerPolicy, runAgent } from '../agent/index.js';
import { certsFlags } from '../cli/index.js';
import { type ConnectOptions, connectFederation } from '../client/index.js';
import { packageVersion } from '../shared/index.js';
import { chunkCount, DEFAULT_CHUNK_BYTES, DEFAULT_UPLOAD_WINDOW } from '../shared/federation/index.js';
import { type BundleManifest, DisclosurePolicy, MergeSpec } from '../shared/merge/index.js';
import { createCertificateAuthority, issueCertificate } from '../shared/security/index.js';
import { type BenchContext, median, table } from './harness.js';
import { listeningPort, startCoordinator, stopProcess } from './processes.js';
import { BERT_BASE, writeSyntheticBert } from './synthetic-bert.js';
import { sinkService } from './upload-sink.js';

const repo = resolve(import.meta.dirname, '..');
const fixtures = resolve(repo, '../shared/fixtures');
const RAW_CHUNK = DEFAULT_CHUNK_BYTES;

interface Tls {
  /** Where ca.pem, NAME.pem and NAME-key.pem lie, as `gramfuse certs` lays them out. */
  readonly dir: string;
  readonly caFile: string;
  readonly caPem: string;
  readonly files: (name: string) => { cert: string; key: string };
  readonly pems: Map<string, { certPem: string; keyPem: string }>;
}

/** `coordinator serve` arguments for the bench's job (listen address and --json come from startCoordinator). */
function coordinatorArgs(state: string, templateDir: string, tls: Tls | undefined): string[] {
  return [
    '--state',
    state,
    '--creators',
    'creator',
    '--template-dir',
    templateDir,
    ...(tls === undefined ? ['--insecure-loopback'] : certsFlags(tls.dir, 'coordinator')),
  ];
}

/**
 * Milliseconds to stream `bytes` in RAW_CHUNK messages into the sink process; with `store`, the sink writes them to
 * that file and fsyncs it (removed afterwards); with `hash` too, the client hashes each message before sending it and the sink hashes
 * the stream (SHA-256, each byte once on each side, as the agent and the coordinator do).
 */
async function rawStream(bytes: number, tls: Tls | undefined, store?: string, hash = false): Promise<number> {
  const sink = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(import.meta.dirname, 'upload-sink.ts'),
      ...(tls === undefined ? [] : ['--tls', tls.caFile, tls.files('coordinator').cert, tls.files('coordinator').key]),
      ...(store === undefined ? [] : ['--store', store]),
      ...(hash ? ['--hash'] : []),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: repo },
  );
  try {
    const { port } = await listeningPort(sink, 'the raw sink');
    const Client = grpc.makeGenericClientConstructor(sinkService, 'Sink');
    const client = new Client(
      `localhost:${port}`,
      tls === undefined
        ? grpc.credentials.createInsecure()
        : grpc.credentials.createSsl(
            Buffer.from(tls.caPem),
            Buffer.from(tls.pems.get('creator')!.keyPem),
            Buffer.from(tls.pems.get('creator')!.certPem),
          ),
    );
    const payload = Buffer.alloc(RAW_CHUNK, 7);
    const begun = performance.now();
    await new Promise<void>((resolveCall, reject) => {
      const stream = (client as unknown as { sink: (cb: (e: Error | null) => void) => grpc.ClientWritableStream<Buffer> }).sink((e) =>
        e === null ? resolveCall() : reject(e),
      );
      void (async () => {
        for (let sent = 0; sent < bytes; sent += RAW_CHUNK) {
          const message = payload.subarray(0, Math.min(RAW_CHUNK, bytes - sent));
          if (hash) createHash('sha256').update(message).digest('hex');
          if (!stream.write(message)) await new Promise((r) => stream.once('drain', r));
        }
        stream.end();
      })();
    });
    const ms = performance.now() - begun;
    client.close();
    return ms;
  } finally {
    await stopProcess(sink);
    if (store !== undefined) await rm(store, { force: true });
  }
}

/** fsyncs every file of `dir` (one level). */
async function syncFiles(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const handle = await open(join(dir, name), 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }
}

interface UploadRun {
  readonly bytes: number;
  /** Sum over owners of each agent's upload phase (join, chunks, receipts verified and kept). */
  readonly uploadSeconds: number;
  /** The agents' upload phases, summed over owners (seconds). */
  readonly phases: { prepare: number; join: number; stream: number; receipts: number };
  readonly chunksResent: number;
}

/**
 * One job: `owners` agents (in this process, one after the other) upload copies of `source` into a coordinator
 * process. With `killAt`, the coordinator is SIGKILLed once the first agent has sent that fraction of its bytes,
 * and restarted on the same port and state; the agent resumes by itself.
 */
async function uploadJob(
  dir: string,
  source: string,
  template: string,
  owners: readonly string[],
  window: number,
  tls: Tls | undefined,
  killAt?: number,
): Promise<UploadRun> {
  const state = join(dir, 'state');
  const args = coordinatorArgs(state, dirname(template), tls);
  let coordinator = await startCoordinator(args);
  const port = coordinator.port;
  const connect = (who: string): ConnectOptions =>
    tls === undefined
      ? { address: `127.0.0.1:${port}`, insecureIdentity: who }
      : { address: `localhost:${port}`, tls: { caPem: tls.caPem, ...tls.pems.get(who)! } };
  try {
    const creator = connectFederation(connect('creator'));
    await creator.createJob(
      JSON.stringify({
        id: 'bench',
        participants: owners,
        policy: { minRowsPerGroup: 1 },
        limits: { maxJobBytes: 64 * 1024 ** 3, uploadWindow: window },
      }),
      { path: template },
    );
    creator.close();
    let bytes = 0;
    let uploadSeconds = 0;
    let chunksResent = 0;
    const phases = { prepare: 0, join: 0, stream: 0, receipts: 0 };
    for (const [i, owner] of owners.entries()) {
      const workDir = join(dir, 'agents', owner);
      const bundle = join(workDir, 'bench', 'bundle');
      await cp(source, bundle, { recursive: true });
      const manifest = JSON.parse(await readFile(join(bundle, 'manifest.json'), 'utf8')) as BundleManifest;
      (manifest.plan as { owner: string }).owner = owner;
      await writeFile(join(bundle, 'manifest.json'), JSON.stringify(manifest));
      // The copy is the bench's set-up: made durable here, so that the agent's first fsync (its approval record)
      // does not pay for writing back the bundle just copied (≈ 0.7 s for the BERT-base-size bundle on 7 December).
      await syncFiles(bundle);
      const chunks = manifest.plan.statistics.reduce((n, s) => n + chunkCount(s.bytes, DEFAULT_CHUNK_BYTES), 0);
      let killed = false;
      const result = await runAgent({
        connect: connect(owner),
        jobId: 'bench',
        workDir,
        yes: true,
        model: '',
        data: '',
        tokenizer: '',
        dtype: 'float64',
        maxLength: 128,
        batchSize: 32,
        seed: 1,
        textField: 'text',
        device: 'cpu',
        toolVersion: packageVersion(),
        uploadAttempts: 20,
        ownerPolicy: ownerPolicy({ minRowsPerGroup: 1, minRowsGiven: true }),
        onUpload: async (sent, total) => {
          if (killAt === undefined || killed || i > 0 || sent < total * killAt) return;
          killed = true;
          const exited = new Promise((r) => coordinator.process.once('exit', r));
          coordinator.process.kill('SIGKILL');
          await exited;
          coordinator = await startCoordinator(args, `127.0.0.1:${port}`);
        },
      });
      bytes += result.bytesSent;
      uploadSeconds += result.seconds.upload;
      for (const key of Object.keys(phases) as (keyof typeof phases)[]) phases[key] += result.seconds.uploadPhases[key];
      chunksResent = Math.max(chunksResent, result.chunksSent - chunks);
    }
    return { bytes, uploadSeconds, phases, chunksResent };
  } finally {
    await coordinator.stop();
    await rm(state, { recursive: true, force: true });
    await rm(join(dir, 'agents'), { recursive: true, force: true });
  }
}

async function collectSource(out: string, model: string, maxExamples: number, maxLength: number): Promise<void> {
  await collectBundle({
    model,
    data: `${fixtures}/scenarios/label-skew/org0.jsonl`,
    tokenizer: `${fixtures}/tokenizer/tokenizer.json`,
    spec: MergeSpec.parse({}),
    dtype: 'float64',
    policy: DisclosurePolicy.parse({ minRowsPerGroup: 1 }),
    maxLength,
    batchSize: 8,
    maxExamples,
    seed: 1,
    textField: 'text',
    device: 'cpu',
    toolVersion: packageVersion(),
    out,
  });
}

export async function benchUpload(context: BenchContext): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'gramfuse-bench-upload-'));
  const reps = context.quick ? 1 : 3;
  try {
    const ca = await createCertificateAuthority('bench CA');
    const pems = new Map<string, { certPem: string; keyPem: string }>();
    pems.set('coordinator', await issueCertificate(ca, 'coordinator', { hosts: ['localhost', '127.0.0.1'] }));
    const names = ['creator', ...Array.from({ length: 6 }, (_, i) => `owner${i}`)];
    for (const name of names) pems.set(name, await issueCertificate(ca, name));
    await writeFile(join(dir, 'ca.pem'), ca.certPem);
    for (const [name, pem] of pems) {
      await writeFile(join(dir, `${name}.pem`), pem.certPem);
      await writeFile(join(dir, `${name}-key.pem`), pem.keyPem, { mode: 0o600 });
    }
    const tlsMaterial: Tls = {
      dir,
      caFile: join(dir, 'ca.pem'),
      caPem: ca.certPem,
      files: (name) => ({ cert: join(dir, `${name}.pem`), key: join(dir, `${name}-key.pem`) }),
      pems,
    };

    const sizes: { name: string; template: string; source: string; owners: string[]; windows: number[] }[] = [];
    // Today's fixture bundle: label-skew org0, 300 examples (65 statistics, 14.5 MB), copied for each owner.
    const fixtureTemplate = `${fixtures}/models/label-skew/org0/model.onnx`;
    await collectSource(join(dir, 'fixture-bundle'), fixtureTemplate, 300, 128);
    sizes.push({
      name: 'fixture',
      template: fixtureTemplate,
      source: join(dir, 'fixture-bundle'),
      owners: names.slice(1, context.quick ? 3 : 7),
      windows: context.quick ? [1, DEFAULT_UPLOAD_WINDOW] : [1, 2, 4, 8, 16, 32],
    });
    if (!context.quick) {
      // The BERT-base-size bundle (≈ 700 MB, Grams up to 3072²), one owner, few examples: the bench is the upload.
      const bert = join(dir, 'bert', 'model.onnx');
      await mkdir(join(dir, 'bert'));
      await writeSyntheticBert(bert, BERT_BASE);
      await collectSource(join(dir, 'bert-bundle'), bert, 8, 64);
      sizes.push({
        name: 'bert-base',
        template: bert,
        source: join(dir, 'bert-bundle'),
        owners: ['owner0'],
        windows: [1, DEFAULT_UPLOAD_WINDOW],
      });
    }

    const rows: (string | number)[][] = [];
    const phaseRows: (string | number)[][] = [];
    for (const size of sizes) {
      for (const tls of [undefined, tlsMaterial]) {
        const transport = tls === undefined ? 'plaintext' : 'mTLS';
        const raw: number[] = [];
        const durable: number[] = [];
        const verified: number[] = [];
        const measured = new Map<number, UploadRun[]>();
        for (let rep = 0; rep < reps; rep++) {
          // Interleaved, so load on the machine hits every configuration alike.
          for (const window of size.windows) {
            const run = await uploadJob(join(dir, 'job'), size.source, size.template, size.owners, window, tls);
            measured.set(window, [...(measured.get(window) ?? []), run]);
          }
          const sent = measured.get(size.windows[0]!)![0]!.bytes;
          raw.push(await rawStream(sent, tls));
          durable.push(await rawStream(sent, tls, join(dir, 'raw.bin')));
          verified.push(await rawStream(sent, tls, join(dir, 'raw.bin'), true));
        }
        const bytes = measured.get(size.windows[0]!)![0]!.bytes;
        const baselineMbPerSecond = bytes / 1e6 / (median(raw) / 1000);
        const durableBaselineMbPerSecond = bytes / 1e6 / (median(durable) / 1000);
        const verifiedBaselineMbPerSecond = bytes / 1e6 / (median(verified) / 1000);
        for (const window of size.windows) {
          // The chunks re-sent after the coordinator is killed half way, at this window (the default window only, on the fixture).
          const resent =
            window === DEFAULT_UPLOAD_WINDOW || size.name === 'fixture'
              ? (await uploadJob(join(dir, 'job'), size.source, size.template, size.owners.slice(0, 1), window, tls, 0.5)).chunksResent
              : null;
          const runs = measured.get(window)!;
          const mbPerSecond = bytes / 1e6 / median(runs.map((r) => r.uploadSeconds));
          // Where one owner's upload goes (medians over the repetitions, per owner), against the raw stream's time
          // for one owner's bytes: the costs outside the stream (the approval record, the join, the receipts
          // verified and recorded) bound the ratio even if the stream ran at raw speed.
          const perOwner = (key: keyof UploadRun['phases']): number => (median(runs.map((r) => r.phases[key])) / size.owners.length) * 1000;
          const ownerMs = {
            prepare: perOwner('prepare'),
            join: perOwner('join'),
            stream: perOwner('stream'),
            receipts: perOwner('receipts'),
            total: (median(runs.map((r) => r.uploadSeconds)) / size.owners.length) * 1000,
          };
          const rawOwnerMs = (bytes / size.owners.length / 1e6 / baselineMbPerSecond) * 1000;
          const outsideMs = ownerMs.prepare + ownerMs.join + ownerMs.receipts;
          const streamBound = rawOwnerMs / (rawOwnerMs + outsideMs);
          context.emit({
            bench: 'upload',
            size: size.name,
            transport,
            mb: bytes / 1e6,
            owners: size.owners.length,
            window,
            mbPerSecond,
            baselineMbPerSecond,
            ratio: mbPerSecond / baselineMbPerSecond,
            durableBaselineMbPerSecond,
            durableRatio: mbPerSecond / durableBaselineMbPerSecond,
            verifiedBaselineMbPerSecond,
            verifiedRatio: mbPerSecond / verifiedBaselineMbPerSecond,
            maxChunksResent: resent,
            ownerMs,
            rawOwnerMs,
            streamBound,
          });
          if (window === DEFAULT_UPLOAD_WINDOW)
            phaseRows.push([
              size.name,
              transport,
              rawOwnerMs.toFixed(0),
              ownerMs.total.toFixed(0),
              ownerMs.prepare.toFixed(0),
              ownerMs.join.toFixed(0),
              ownerMs.stream.toFixed(0),
              (ownerMs.stream / rawOwnerMs).toFixed(2),
              ownerMs.receipts.toFixed(0),
              streamBound.toFixed(2),
            ]);
          rows.push([
            size.name,
            transport,
            window === DEFAULT_UPLOAD_WINDOW ? `${window} (default)` : window,
            (bytes / 1e6).toFixed(0),
            size.owners.length,
            baselineMbPerSecond.toFixed(0),
            durableBaselineMbPerSecond.toFixed(0),
            verifiedBaselineMbPerSecond.toFixed(0),
            mbPerSecond.toFixed(0),
            (mbPerSecond / baselineMbPerSecond).toFixed(2),
            (mbPerSecond / durableBaselineMbPerSecond).toFixed(2),
            (mbPerSecond / verifiedBaselineMbPerSecond).toFixed(2),
            resent === null ? '' : resent,
          ]);
        }
      }
    }
    context.print(
      `upload: statistics upload into a coordinator process (agents one after the other, each uploading a real bundle) vs a raw grpc-js client stream of the same bytes into a process of its own, ${RAW_CHUNK / 1048576} MiB messages, loopback (medians of ${reps})\n` +
        table(
          [
            'bundle',
            'transport',
            'window',
            'MB',
            'owners',
            'raw MB/s',
            'raw+disk MB/s',
            'raw+disk+hash MB/s',
            'statistics MB/s',
            'statistics/raw',
            'statistics/raw+disk',
            'statistics/raw+disk+hash',
            're-sent after a kill',
          ],
          rows,
        ) +
        "\nstatistics MB/s: bytes over the agents' upload phase (join, chunks read and hashed, the coordinator's SHA-256 (each byte once), writes, group commits with fsync, signed receipts verified and kept in the agent's ledger); raw+disk: the raw stream with the sink writing every message to a file and fsyncing it before its reply (the least a receiver that keeps the bytes must do); raw+disk+hash: that, with the client hashing each message (SHA-256) before it sends it and the sink hashing the stream (the least a sender and receiver that verify every byte must also do); re-sent after a kill: chunks the first agent sent twice when the coordinator was SIGKILLed half way through its upload and restarted (at most the window); goal >= 0.85" +
        `\n\nwhere one owner's upload goes at the default window ${DEFAULT_UPLOAD_WINDOW} (ms per owner, medians of ${reps})\n` +
        table(
          ['bundle', 'transport', 'raw stream', 'upload', 'prepare', 'join', 'stream', 'stream/raw stream', 'receipts', 'ratio bound'],
          phaseRows,
        ) +
        "\nraw stream: the raw stream's time for one owner's bytes; prepare: the agent's ledger and its approval record (fsynced); join: the join call (the coordinator checks the manifest and writes it durably); stream: the upload stream, chunks read and hashed, the coordinator's checks, writes and group commits (fsync, signed receipts, its audit ledger) included; receipts: the receipts fetched, each signature verified, recorded in the agent's ledger (fsynced); ratio bound: raw stream / (raw stream + prepare + join + receipts), the ratio this upload would reach with a stream as fast as raw",
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
