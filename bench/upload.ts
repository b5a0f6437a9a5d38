// bench/upload: MB/s of a statistics upload through the coordinator (chunking, SHA-256 per chunk, durable
// writes, commit, signed receipts) against a raw grpc-js client stream of the same bytes and chunk size,
// plaintext and mTLS, measured in the same run on loopback.
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import * as grpc from '@grpc/grpc-js';

import { collectBundle, runAgent } from '../agent/index.js';
import { connectFederation } from '../client/index.js';
import { startCoordinatorServer } from '../coordinator/index.js';
import { packageVersion } from '../shared/index.js';
import { DisclosurePolicy, MergeSpec } from '../shared/merge/index.js';
import { createCertificateAuthority, issueCertificate } from '../shared/security/index.js';
import { type BenchContext, median, table } from './harness.js';

const fixtures = resolve(import.meta.dirname, '../../shared/fixtures');
const CHUNK = 4 * 1024 * 1024;

/** A raw client-streaming service: bytes in, a count out (no hashing, no disk). */
const sinkService: grpc.ServiceDefinition = {
  sink: {
    path: '/bench.Sink/Sink',
    requestStream: true,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};

async function rawStream(
  bytes: number,
  tls: { ca: string; server: { certPem: string; keyPem: string }; client: { certPem: string; keyPem: string } } | undefined,
): Promise<number> {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 * 1024 });
  server.addService(sinkService, {
    sink: (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      let received = 0;
      call.on('data', (b: Buffer) => (received += b.byteLength));
      call.on('end', () => callback(null, Buffer.from(String(received))));
    },
  });
  const creds =
    tls === undefined
      ? grpc.ServerCredentials.createInsecure()
      : grpc.ServerCredentials.createSsl(
          Buffer.from(tls.ca),
          [{ private_key: Buffer.from(tls.server.keyPem), cert_chain: Buffer.from(tls.server.certPem) }],
          true,
        );
  const port = await new Promise<number>((r, j) => server.bindAsync('127.0.0.1:0', creds, (e, p) => (e === null ? r(p) : j(e))));
  const Client = grpc.makeGenericClientConstructor(sinkService, 'Sink');
  const client = new Client(
    `localhost:${port}`,
    tls === undefined
      ? grpc.credentials.createInsecure()
      : grpc.credentials.createSsl(Buffer.from(tls.ca), Buffer.from(tls.client.keyPem), Buffer.from(tls.client.certPem)),
  );
  const payload = Buffer.alloc(CHUNK, 7);
  const started = performance.now();
  await new Promise<void>((resolveCall, reject) => {
    const stream = (client as unknown as { sink: (cb: (e: Error | null) => void) => grpc.ClientWritableStream<Buffer> }).sink((e) =>
      e === null ? resolveCall() : reject(e),
    );
    void (async () => {
      for (let sent = 0; sent < bytes; sent += CHUNK) {
        if (!stream.write(payload.subarray(0, Math.min(CHUNK, bytes - sent)))) await new Promise((r) => stream.once('drain', r));
      }
      stream.end();
    })();
  });
  const ms = performance.now() - started;
  client.close();
  server.forceShutdown();
  return ms;
}

export async function benchUpload(context: BenchContext): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'gramfuse-bench-upload-'));
  const owners = Array.from({ length: context.quick ? 2 : 6 }, (_, i) => `owner${i}`);
  const rows: (string | number)[][] = [];
  try {
    const ca = await createCertificateAuthority('bench CA');
    const serverCert = await issueCertificate(ca, 'coordinator', { hosts: ['localhost', '127.0.0.1'] });
    const clientCerts = new Map<string, { certPem: string; keyPem: string }>();
    for (const o of ['creator', ...owners]) clientCerts.set(o, await issueCertificate(ca, o));
    // One real bundle (label-skew org0), copied for each owner with its name in the manifest.
    const source = join(dir, 'source');
    await collectBundle({
      model: `${fixtures}/models/label-skew/org0/model.onnx`,
      data: `${fixtures}/scenarios/label-skew/org0.jsonl`,
      tokenizer: `${fixtures}/tokenizer/tokenizer.json`,
      spec: MergeSpec.parse({}),
      dtype: 'float64',
      policy: DisclosurePolicy.parse({}),
      maxLength: 128,
      batchSize: 32,
      maxExamples: 300,
      seed: 1,
      textField: 'text',
      device: 'cpu',
      toolVersion: packageVersion(),
      out: source,
    });
    for (const tls of [false, true]) {
      const runs: { ms: number; bytes: number }[] = [];
      const rawRuns: number[] = [];
      for (let run = 0; run < (context.quick ? 1 : 3); run++) {
        const state = join(dir, `state-${tls}-${run}`);
        const server = await startCoordinatorServer({
          stateDir: state,
          listen: '127.0.0.1:0',
          creators: ['creator'],
          ...(tls ? { tls: { caPem: ca.certPem, certPem: serverCert.certPem, keyPem: serverCert.keyPem } } : { insecureLoopback: true }),
        });
        const connect = (who: string) =>
          tls
            ? { address: `localhost:${server.port}`, tls: { caPem: ca.certPem, ...clientCerts.get(who)! } }
            : { address: `127.0.0.1:${server.port}`, insecureIdentity: who };
        const creator = connectFederation(connect('creator'));
        await creator.createJob(
          JSON.stringify({ id: 'bench', participants: owners }),
          await readFile(`${fixtures}/models/label-skew/org0/model.onnx`),
        );
        creator.close();
        let bytes = 0;
        const started = performance.now();
        for (const owner of owners) {
          const bundle = join(dir, `agents-${tls}-${run}`, owner, 'bench', 'bundle');
          await cp(source, bundle, { recursive: true });
          const manifest = JSON.parse(await readFile(join(bundle, 'manifest.json'), 'utf8')) as { plan: { owner: string } };
          manifest.plan.owner = owner;
          await writeFile(join(bundle, 'manifest.json'), JSON.stringify(manifest));
          const result = await runAgent({
            connect: connect(owner),
            jobId: 'bench',
            workDir: join(dir, `agents-${tls}-${run}`, owner),
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
          });
          bytes += result.bytesSent;
        }
        runs.push({ ms: performance.now() - started, bytes });
        await server.close();
        rawRuns.push(await rawStream(bytes, tls ? { ca: ca.certPem, server: serverCert, client: clientCerts.get('creator')! } : undefined));
        await rm(state, { recursive: true, force: true });
      }
      const bytes = runs[0]!.bytes;
      const ms = median(runs.map((r) => r.ms));
      const rawMs = median(rawRuns);
      const mbPerSecond = bytes / 1e6 / (ms / 1000);
      const baselineMbPerSecond = bytes / 1e6 / (rawMs / 1000);
      context.emit({
        bench: 'upload',
        tls,
        mb: bytes / 1e6,
        owners: owners.length,
        chunkBytes: CHUNK,
        mbPerSecond,
        baselineMbPerSecond,
        ratio: mbPerSecond / baselineMbPerSecond,
      });
      rows.push([
        tls ? 'mTLS' : 'plaintext',
        (bytes / 1e6).toFixed(1),
        owners.length,
        baselineMbPerSecond.toFixed(0),
        mbPerSecond.toFixed(0),
        (mbPerSecond / baselineMbPerSecond).toFixed(2),
      ]);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  context.print(
    `upload: statistics upload through the coordinator (one agent at a time, each uploading a real bundle) vs a raw grpc-js client stream of the same bytes, ${CHUNK / 1048576} MiB chunks, loopback, one process (medians)\n` +
      table(['transport', 'MB', 'owners', 'raw MB/s', 'statistics MB/s', 'statistics/raw'], rows) +
      '\nthe statistics upload includes, per owner: getJob, bundle verification (SHA-256 of every tensor), join, SHA-256 per chunk on both sides, an acknowledgement per chunk, group-committed writes, signed receipts and their verification; goal >= 0.85',
  );
}
