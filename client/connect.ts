// The federation gRPC client (DESIGN.md §7): connect over mTLS (or insecure loopback), typed calls with
// deadlines, the one retry policy of retry.ts, streamed downloads verified against the coordinator's digest.
import { createHash, X509Certificate } from 'node:crypto';
import { checkServerIdentity } from 'node:tls';

import * as grpc from '@grpc/grpc-js';

import { federation } from '../proto/index.js';
import { ErrorCode, errorFromGrpc, GramfuseError, writeFileAtomic } from '../shared/index.js';
import { certificateName } from '../shared/security/index.js';
import { parseSecure, RoundView } from '../shared/secure-aggregation/index.js';
import { withRetries } from './retry.js';

/** mTLS material of a client: the federation CA and its own certificate (whose subject is its identity). */
export interface ClientTls {
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
}

export interface ConnectOptions {
  readonly address: string;
  readonly tls?: ClientTls;
  /** Insecure loopback mode only: the identity to claim. */
  readonly insecureIdentity?: string;
  /** Deadline of each unary call. Default 30 s. */
  readonly deadlineSeconds?: number;
}

export interface FederationClient {
  readonly identity: string;
  /**
   * The certificate (PEM) the coordinator presented in the TLS handshake, once a call has connected; undefined in
   * insecure loopback mode. Secure aggregation refuses it as a peer (the coordinator cannot pose as an owner).
   */
  serverCertificate(): string | undefined;
  getJob(jobId: string): Promise<federation.JobStatus>;
  /** Every job the coordinator lets this identity see. */
  listJobs(): Promise<federation.JobStatus[]>;
  createJob(specJson: string, template: Uint8Array | { readonly path: string }): Promise<federation.JobStatus>;
  join(request: federation.JoinRequest): Promise<federation.UploadState>;
  uploadState(jobId: string): Promise<federation.UploadState>;
  /**
   * Sends chunks with at most `window` of them unacknowledged (each is stored when acknowledged, so an interruption
   * loses at most `window` chunks); resolves with the coordinator's reply once every chunk is acknowledged.
   * Chunks come as messages or already encoded (chunkMessage: the agent reads a chunk's bytes straight into its
   * message); the next one is read from `chunks` only while fewer than `window` are unacknowledged, which a
   * ChunkMessagePool of the same window relies on.
   */
  upload(chunks: AsyncIterable<federation.Chunk | Buffer>, deadlineSeconds: number, window?: number): Promise<federation.UploadReply>;
  download(jobId: string, artifact: string): Promise<Buffer>;
  /**
   * Streams an artifact into `path`: written beside it, its SHA-256 checked against the coordinator's
   * digest (and `expectedSha256` when given, e.g. the job status's `resultSha256`), fsynced, renamed into
   * place. A mismatch leaves no file and is UPLOAD_INVALID. Returns the digest and size.
   */
  downloadTo(jobId: string, artifact: string, path: string, expectedSha256?: string): Promise<{ sha256: string; bytes: number }>;
  reportEvaluation(report: federation.EvaluationReport): Promise<void>;
  watch(jobId: string, onStatus: (status: federation.JobStatus) => void): Promise<federation.JobStatus>;
  /**
   * A solver worker's fetch of one part of a group's task (Σ G̃ packed, or R), its size and SHA-256 checked against
   * the task's (UPLOAD_INVALID otherwise). `undefined` when the coordinator says the group is committed already.
   * The gram part names the task message held (its JetStream stream sequence and delivery count) and comes with the
   * delivery's lease nonce, which the answer must carry.
   */
  fetchSolveInput(request: {
    jobId: string;
    group: string;
    part: 'gram' | 'rhs';
    sha256: string;
    bytes: number;
    streamSequence?: number;
    delivery?: number;
  }): Promise<{ data: Uint8Array; lease: string } | undefined>;
  /** A solver worker's answer: the header, then `x` (n × rhs float64) in 4 MiB slices; or an error report without x. */
  submitSolution(header: federation.SolutionHeader, x?: Uint8Array): Promise<federation.SolutionReply>;
  /**
   * Secure aggregation (privacy.secureAggregation): one of the SecAgg+ calls with its JSON body (round 0's keys and
   * bounds, round 1's sealed shares, the consistency round's signature, the unmasking reveal, or `round` to read the
   * state); returns the round as this
   * owner may see it, validated.
   */
  secure(call: 'advertise' | 'share' | 'confirm' | 'reveal' | 'round', jobId: string, body?: unknown): Promise<RoundView>;
  close(): void;
}

/** The host part of host:port ([v6]:port too). */
function hostOf(address: string): string {
  const at = address.lastIndexOf(':');
  const host = at < 0 ? address : address.slice(0, at);
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);

export function connectFederation(options: ConnectOptions): FederationClient {
  if (options.tls === undefined && !LOOPBACK.has(hostOf(options.address))) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `--insecure-loopback talks to 127.0.0.1, localhost or [::1] only, not ${options.address}: use mTLS (--tls-ca, --tls-cert, --tls-key) for any other address`,
      { facts: { address: options.address } },
    );
  }
  const retry = <T>(call: () => Promise<T>): Promise<T> => withRetries(call, { address: options.address });
  let serverCertificate: string | undefined;
  const credentials =
    options.tls === undefined
      ? grpc.credentials.createInsecure()
      : grpc.credentials.createSsl(Buffer.from(options.tls.caPem), Buffer.from(options.tls.keyPem), Buffer.from(options.tls.certPem), {
          // The usual host name check, and the certificate kept (what it is matters to secure aggregation).
          checkServerIdentity: (host, cert) => {
            const error = checkServerIdentity(host, cert);
            if (error === undefined) serverCertificate = new X509Certificate(cert.raw).toString();
            return error;
          },
        });
  const identity = options.tls === undefined ? (options.insecureIdentity ?? '') : certificateName(options.tls.certPem);
  const channelOptions = { 'grpc.max_receive_message_length': 5 * 1024 * 1024 };
  const jobs = new federation.JobsClient(options.address, credentials, channelOptions);
  const uploads = new federation.UploadsClient(options.address, credentials, channelOptions);
  const results = new federation.ResultsClient(options.address, credentials, channelOptions);
  const solves = new federation.SolvesClient(options.address, credentials, channelOptions);
  const secure = new federation.SecureAggregationClient(options.address, credentials, channelOptions);
  const metadata = (): grpc.Metadata => {
    const m = new grpc.Metadata();
    if (options.tls === undefined) m.set('x-gramfuse-identity', identity);
    return m;
  };
  const deadline = (seconds = options.deadlineSeconds ?? 30): Date => new Date(Date.now() + seconds * 1000);
  const unary = <Req, Res>(
    fn: (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: Res) => void) => unknown,
    req: Req,
  ): Promise<Res> =>
    new Promise((resolve, reject) => {
      fn(req, metadata(), { deadline: deadline() }, (error, response) => (error === null ? resolve(response) : reject(error)));
    });
  return {
    identity,
    serverCertificate: () => serverCertificate,
    getJob: (jobId) => retry(() => unary(jobs.get.bind(jobs), { jobId })),
    listJobs: async () => (await retry(() => unary(jobs.list.bind(jobs), {}))).jobs,
    createJob: (specJson, template) =>
      retry(() =>
        unary(
          jobs.create.bind(jobs),
          template instanceof Uint8Array
            ? { specJson, templateOnnx: template, templatePath: '' }
            : { specJson, templateOnnx: new Uint8Array(0), templatePath: template.path },
        ),
      ),
    join: (request) => retry(() => unary(uploads.join.bind(uploads), request)),
    secure: async (call, jobId, body) => {
      const method = {
        advertise: secure.advertise.bind(secure),
        share: secure.share.bind(secure),
        confirm: secure.confirm.bind(secure),
        reveal: secure.reveal.bind(secure),
        round: secure.round.bind(secure),
      }[call];
      // Every call is idempotent on the coordinator (a repeated answer returns the round), so retrying is safe.
      const reply = await retry(() => unary(method, { jobId, bodyJson: body === undefined ? '{}' : JSON.stringify(body) }));
      return parseSecure(RoundView, reply.roundJson, `the coordinator's secure round of job ${jobId}`);
    },
    uploadState: (jobId) => retry(() => unary(uploads.state.bind(uploads), { jobId })),
    upload: (chunks, deadlineSeconds, window = 1) =>
      new Promise((resolve, reject) => {
        const method = federation.UploadsService.upload;
        const stream = uploads.makeBidiStreamRequest<federation.Chunk | Buffer, federation.UploadAck>(
          method.path,
          (chunk) => (Buffer.isBuffer(chunk) ? chunk : method.requestSerialize(chunk)),
          method.responseDeserialize,
          metadata(),
          { deadline: deadline(deadlineSeconds) },
        );
        let reply: federation.UploadReply | undefined;
        let sent = 0;
        let acked = 0;
        let stopped = false;
        let wake: (() => void) | undefined;
        const fail = (error: unknown): void => {
          if (stopped) return;
          stopped = true;
          wake?.();
          reject(error instanceof Error ? error : new Error(String(error)));
        };
        stream.on('data', (ack: federation.UploadAck) => {
          if (ack.reply !== undefined) reply = ack.reply;
          else acked++;
          wake?.();
        });
        stream.on('error', fail);
        stream.on('end', () => {
          if (reply !== undefined) resolve(reply);
          else
            fail(new GramfuseError(ErrorCode.Unavailable, "the upload stream ended without the coordinator's reply; run again to resume"));
        });
        void (async () => {
          try {
            const iterator = chunks[Symbol.asyncIterator]();
            for (;;) {
              // At most `window` chunks unacknowledged (the next one is not even read before there is room): a dropped
              // link or a coordinator crash loses only the chunks in flight.
              while (sent - acked >= window && !stopped) await new Promise<void>((r) => (wake = r));
              if (stopped) return;
              const next = await iterator.next();
              if (next.done === true) break;
              stream.write(next.value);
              sent++;
            }
            stream.end();
          } catch (error) {
            stream.cancel();
            fail(error);
          }
        })();
      }),
    download: (jobId, artifact) =>
      retry(async () => {
        const parts: Buffer[] = [];
        let received = 0;
        await new Promise<void>((resolve, reject) => {
          const stream = results.download({ jobId, artifact, offset: 0n }, metadata(), { deadline: deadline(600) });
          stream.on('data', (chunk: federation.DownloadChunk) => {
            parts.push(Buffer.from(chunk.data));
            received += chunk.data.byteLength;
          });
          stream.on('error', reject);
          stream.on('end', () => resolve());
        });
        return Buffer.concat(parts, received);
      }),
    downloadTo: (jobId, artifact, path, expectedSha256) =>
      retry(async () => {
        const hash = createHash('sha256');
        let received = 0;
        let announced = '';
        let total = -1;
        let digest = '';
        const stream = results.download({ jobId, artifact, offset: 0n }, metadata(), { deadline: deadline(3600) });
        async function* parts(): AsyncGenerator<Uint8Array> {
          for await (const chunk of stream as AsyncIterable<federation.DownloadChunk>) {
            if (BigInt(received) !== chunk.offset)
              throw new GramfuseError(
                ErrorCode.UploadInvalid,
                `${artifact}: a chunk at offset ${chunk.offset} arrived, expected ${received}`,
              );
            announced = chunk.sha256;
            total = Number(chunk.totalBytes);
            hash.update(chunk.data);
            received += chunk.data.byteLength;
            yield chunk.data;
          }
          digest = hash.digest('hex');
          const expected = expectedSha256 ?? announced;
          if (
            (total >= 0 && received !== total) ||
            (announced !== '' && digest !== announced) ||
            (expected !== '' && digest !== expected)
          ) {
            throw new GramfuseError(
              ErrorCode.UploadInvalid,
              `${artifact} of job ${jobId}: received ${received} bytes with SHA-256 ${digest}, expected ${total} bytes with ${expected}; nothing was kept, download again`,
              { facts: { job: jobId, artifact, sha256: digest, expected } },
            );
          }
        }
        try {
          await writeFileAtomic(path, parts(), `writing the downloaded ${artifact}`);
        } catch (error) {
          // A write that failed before the stream ended (no directory, no space): stop the stream, quietly.
          stream.on('error', () => undefined);
          stream.cancel();
          const cause = (error as GramfuseError).cause;
          if (cause instanceof GramfuseError) throw cause;
          if (typeof (cause as { code?: unknown } | undefined)?.code === 'number') throw cause;
          throw error;
        }
        return { sha256: digest, bytes: received };
      }),
    reportEvaluation: async (report) => {
      await retry(() => unary(results.reportEvaluation.bind(results), report));
    },
    fetchSolveInput: (request) =>
      retry(async () => {
        const out = new Uint8Array(request.bytes);
        const hash = createHash('sha256');
        let received = 0;
        let committed = false;
        let lease = '';
        const stream = solves.fetchInput(
          {
            jobId: request.jobId,
            group: request.group,
            part: request.part,
            sha256: request.sha256,
            offset: 0n,
            streamSequence: BigInt(request.streamSequence ?? 0),
            delivery: request.delivery ?? 0,
          },
          metadata(),
          { deadline: deadline(3600) },
        );
        for await (const chunk of stream as AsyncIterable<federation.SolveInputChunk>) {
          if (chunk.totalBytes === 0n) {
            committed = true;
            continue;
          }
          if (chunk.lease !== '') lease = chunk.lease;
          if (BigInt(received) !== chunk.offset || received + chunk.data.byteLength > request.bytes)
            throw new GramfuseError(
              ErrorCode.UploadInvalid,
              `group ${request.group}'s ${request.part}: a chunk at offset ${chunk.offset} (${chunk.data.byteLength} bytes) does not follow ${received} of ${request.bytes}`,
            );
          out.set(chunk.data, received);
          hash.update(chunk.data);
          received += chunk.data.byteLength;
        }
        if (committed) return undefined;
        const digest = hash.digest('hex');
        if (received !== request.bytes || digest !== request.sha256)
          throw new GramfuseError(
            ErrorCode.UploadInvalid,
            `group ${request.group}'s ${request.part} of job ${request.jobId}: received ${received} bytes with SHA-256 ${digest.slice(0, 16)}…, the task says ${request.bytes} bytes with ${request.sha256.slice(0, 16)}…`,
            { facts: { job: request.jobId, group: request.group, part: request.part } },
          );
        return { data: out, lease };
      }),
    submitSolution: (header, x) =>
      new Promise((resolve, reject) => {
        const stream = solves.submit(metadata(), { deadline: deadline(3600) }, (error, reply) =>
          error === null ? resolve(reply) : reject(errorFromGrpc(error, options.address)),
        );
        void (async () => {
          const write = (message: federation.SolutionChunk): Promise<void> =>
            new Promise((done) => (stream.write(message) ? done() : stream.once('drain', () => done())));
          await write({ header, data: new Uint8Array(0) });
          const slice = 4 * 1024 * 1024;
          if (x !== undefined)
            for (let at = 0; at < x.byteLength; at += slice) await write({ data: x.subarray(at, Math.min(x.byteLength, at + slice)) });
          stream.end();
        })();
      }),
    watch: (jobId, onStatus) =>
      new Promise((resolve, reject) => {
        let last: federation.JobStatus | undefined;
        const stream = jobs.watch({ jobId }, metadata(), { deadline: deadline(3600) });
        stream.on('data', (status: federation.JobStatus) => {
          last = status;
          onStatus(status);
        });
        stream.on('error', (error: grpc.ServiceError) => reject(errorFromGrpc(error, options.address)));
        stream.on('end', () =>
          last === undefined
            ? reject(new GramfuseError(ErrorCode.Unavailable, `job ${jobId}: the watch ended without a status`))
            : resolve(last),
        );
      }),
    close: () => {
      jobs.close();
      uploads.close();
      results.close();
      solves.close();
      secure.close();
    },
  };
}
