import { createHash, type Hash, X509Certificate } from 'node:crypto';
import { type FileHandle, mkdir, open, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { PeerCertificate } from 'node:tls';

import * as grpc from '@grpc/grpc-js';

import { federation } from '../../proto/index.js';
import { ErrorCode, GramfuseError, writeAll } from '../../shared/index.js';
import { isValidIdentity, MAX_UPLOAD_WINDOW } from '../../shared/federation/index.js';
import { AuditPublisher, DEFAULT_SOLVE_QUEUE, NatsEventBus, type NatsTarget, type SolveQueueSettings } from '../../shared/nats/index.js';
import { type Action, authorize, canSee } from './auth.js';
import { CommitBatch } from '../intake/index.js';
import { Coordinator, type CoordinatorOptions, type Receipt } from '../jobs/index.js';
import { type AnswerHeader, NatsSolveExecutor } from '../solve/index.js';
import { AdvertiseBody, ConfirmBody, parseSecure, RevealBody, type RoundView, ShareBody } from '../../shared/secure-aggregation/index.js';
import { chunkFromProto, decoded, jobToProto, receiptToProto, toStatus, uploadStateToProto, withCodedDecoding } from './wire.js';

/** TLS material for the server: the federation CA and the coordinator's own certificate. */
export interface ServerTls {
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
}

export interface CoordinatorServerOptions extends CoordinatorOptions {
  readonly stateDir: string;
  /** host:port; port 0 picks a free one. */
  readonly listen: string;
  /** mTLS (required unless `insecureLoopback`). */
  readonly tls?: ServerTls;
  /** Plain text on 127.0.0.1 only, identities from the `x-gramfuse-identity` header: for local demos. */
  readonly insecureLoopback?: boolean;
  /**
   * A NATS server with JetStream: control-plane events go to `gramfuse.jobs.<job>.*` and every audit record
   * is also published to GRAMFUSE_AUDIT (the file ledger stays the source; an outage only delays publishing).
   * In production an endpoint with TLS and the coordinator role's credentials (docs/SECURITY.md).
   */
  readonly nats?: NatsTarget;
  /**
   * Where Gram groups are solved: in a worker thread of this process (the default), or by solver workers pulling
   * tasks from the JetStream work queue GRAMFUSE_SOLVE on `nats` (`gramfuse solver serve`).
   */
  readonly solvers?: 'in-process' | 'nats';
  /** AckWait and MaxDeliver of the solve queue. @default DEFAULT_SOLVE_QUEUE */
  readonly solveQueue?: SolveQueueSettings;
  /** Relative residual a worker's solution must stay below. @default DEFAULT_RESIDUAL_TOLERANCE */
  readonly residualTolerance?: number;
  /** Per-group solve deadline of the distributed solve. @default DEFAULT_SOLVE_DEADLINE_MS */
  readonly solveDeadlineMs?: number;
}

export type ServerState = 'starting' | 'serving' | 'draining' | 'stopped';

export interface CoordinatorServer extends AsyncDisposable {
  readonly port: number;
  readonly coordinator: Coordinator;
  state(): ServerState;
  close(graceMs?: number): Promise<void>;
}

/**
 * Chunks past an upload stream's window that a client may have sent before it is cancelled: a stream past its
 * window is paused at once (HTTP/2 flow control holds the client back), and these cover what was already decoded.
 */
const WINDOW_OVERRUN_CHUNKS = 16;
/** Solution slices (4 MiB each from our workers) a Submit stream may have decoded and not yet written before it is paused. */
const SUBMIT_WINDOW = 4;

/** Starts the coordinator's gRPC server. */
export async function startCoordinatorServer(options: CoordinatorServerOptions): Promise<CoordinatorServer> {
  let state: ServerState = 'starting';
  const events = options.nats === undefined ? undefined : await NatsEventBus.connect(options.nats, 'gramfuse coordinator');
  if (options.solvers === 'nats' && options.nats === undefined)
    throw new GramfuseError(ErrorCode.InvalidArgument, '--solvers nats needs --nats URL: the solve tasks go on its JetStream work queue');
  const solveExecutor =
    options.solvers === 'nats'
      ? await NatsSolveExecutor.start({
          url: options.nats!,
          queue: options.solveQueue ?? DEFAULT_SOLVE_QUEUE,
          ...(options.residualTolerance === undefined ? {} : { residualTolerance: options.residualTolerance }),
          ...(options.solveDeadlineMs === undefined ? {} : { deadlineMs: options.solveDeadlineMs }),
          ...(options.log === undefined ? {} : { log: options.log }),
        })
      : undefined;
  const coordinator = await Coordinator.open(options.stateDir, {
    ...options,
    ...(events === undefined ? {} : { events }),
    ...(solveExecutor === undefined ? {} : { solveExecutor }),
  });
  const publisher =
    options.nats === undefined
      ? undefined
      : await AuditPublisher.start(coordinator.ledger, options.nats, 'gramfuse coordinator audit', options.log);
  if (options.tls === undefined && options.insecureLoopback !== true) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      'the coordinator needs --tls-ca, --tls-cert and --tls-key (mTLS), or --insecure-loopback for a local demo',
    );
  }
  const insecure = options.tls === undefined;
  const host = options.listen.slice(0, options.listen.lastIndexOf(':'));
  if (insecure && host !== '127.0.0.1' && host !== 'localhost') {
    throw new GramfuseError(ErrorCode.InvalidArgument, `--insecure-loopback binds to 127.0.0.1 only, not ${host}`, {
      facts: { listen: options.listen },
    });
  }
  const identity = (call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate }; metadata: grpc.Metadata }): string => {
    if (insecure) {
      const claimed = call.metadata.get('x-gramfuse-identity')[0];
      if (typeof claimed !== 'string' || claimed === '')
        throw new GramfuseError(ErrorCode.NotAuthorized, 'insecure loopback mode: send the x-gramfuse-identity header');
      if (!isValidIdentity(claimed))
        throw new GramfuseError(ErrorCode.NotAuthorized, `identity ${JSON.stringify(claimed.slice(0, 80))} is not a valid identity name`);
      return claimed;
    }
    const cert = call.getAuthContext().sslPeerCertificate;
    const raw = cert?.subject.CN;
    const cn = Array.isArray(raw) ? raw[0] : raw;
    if (typeof cn !== 'string' || cn === '')
      throw new GramfuseError(ErrorCode.NotAuthorized, 'no client certificate with a subject common name');
    if (!isValidIdentity(cn))
      throw new GramfuseError(
        ErrorCode.NotAuthorized,
        `certificate common name ${JSON.stringify(cn.slice(0, 80))} is not a valid identity name (letters, digits, . _ @ -)`,
      );
    return cn;
  };
  const auth = { creators: options.creators ?? [], solvers: options.solverIdentities ?? [], observers: options.observers ?? [] };
  type Call = Parameters<typeof identity>[0];
  /** The caller's identity, once `authorize` allowed it `action` on job `jobId`: every RPC goes through here. */
  const guard = (call: Call, action: Action, jobId?: string): string => {
    const who = identity(call);
    authorize(who, action, jobId === undefined ? undefined : coordinator.access(jobId), auth);
    return who;
  };
  const unary =
    <Req, Res>(handler: (call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res> | Res): grpc.handleUnaryCall<Req, Res> =>
    (call, callback) => {
      Promise.resolve()
        .then(() => {
          decoded(call.request);
          return handler(call);
        })
        .then(
          (result) => callback(null, result),
          (error: unknown) => callback(toStatus(error)),
        );
    };

  // 64 MiB for inline templates; statistic chunks are held to the job's maxChunkBytes (4 MiB) by the coordinator.
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 * 1024 });
  server.addService(withCodedDecoding(federation.JobsService), {
    create: unary<federation.CreateJobRequest, federation.JobStatus>(async (call) => {
      let spec: unknown;
      try {
        spec = JSON.parse(call.request.specJson);
      } catch (error) {
        throw new GramfuseError(ErrorCode.InvalidArgument, `job spec is not valid JSON: ${(error as Error).message}`);
      }
      const who = guard(call, 'job.create');
      const template = call.request.templatePath !== '' ? call.request.templatePath : call.request.templateOnnx;
      return jobToProto(await coordinator.createJob(who, spec, template));
    }),
    get: unary<federation.GetJobRequest, federation.JobStatus>((call) => {
      guard(call, 'job.read', call.request.jobId);
      return jobToProto(coordinator.view(call.request.jobId));
    }),
    list: unary<federation.ListJobsRequest, federation.ListJobsReply>((call) => {
      const who = identity(call);
      return {
        jobs: coordinator
          .list()
          .filter((j) =>
            canSee(
              who,
              {
                id: j.spec.id,
                participants: j.spec.participants,
                ...(j.createdBy === undefined ? {} : { createdBy: j.createdBy }),
              },
              auth,
            ),
          )
          .map(jobToProto),
      };
    }),
    watch: (call: grpc.ServerWritableStream<federation.GetJobRequest, federation.JobStatus>) => {
      void (async () => {
        try {
          decoded(call.request);
          guard(call, 'job.read', call.request.jobId);
          let stop: (() => Promise<void>) | undefined = undefined;
          let ended = false;
          const send = (): void => {
            if (ended) return;
            const view = coordinator.view(call.request.jobId);
            call.write(jobToProto(view));
            if (view.state === 'done' || view.state === 'failed') {
              ended = true;
              void stop?.();
              call.end();
            }
          };
          // Every event of the job (state, joins, upload and solve progress) sends the job's current status.
          stop = await coordinator.watch(call.request.jobId, send);
          call.on('cancelled', () => void stop?.());
          send();
        } catch (error) {
          call.emit('error', toStatus(error));
        }
      })();
    },
  } satisfies federation.JobsServer);

  server.addService(withCodedDecoding(federation.UploadsService), {
    join: unary<federation.JoinRequest, federation.UploadState>(async (call) => {
      const who = guard(call, 'job.upload', call.request.jobId);
      const held = await coordinator.join(who, call.request.jobId, call.request.fingerprint, call.request.manifestJson);
      return uploadStateToProto(call.request.jobId, held, coordinator.uploadWindow(call.request.jobId));
    }),
    state: unary<federation.GetJobRequest, federation.UploadState>(async (call) => {
      const held = await coordinator.uploadState(guard(call, 'job.upload', call.request.jobId), call.request.jobId);
      return uploadStateToProto(call.request.jobId, held, coordinator.uploadWindow(call.request.jobId));
    }),
    upload: (call: grpc.ServerDuplexStream<federation.Chunk, federation.UploadAck>) => {
      let failed = false;
      const fail = (error: unknown): void => {
        if (failed) return;
        failed = true;
        // grpc-js sends a status for an 'error' event on a server stream.
        call.emit('error', toStatus(error));
      };
      let who: string;
      try {
        who = identity(call);
      } catch (error) {
        fail(error);
        return;
      }
      const receipts: Receipt[] = [];
      let streamJob: string | undefined;
      const batch = new CommitBatch();
      let received = 0;
      let skipped = 0;
      let finished = false;
      const addReceipts = (list: readonly Receipt[]): void => {
        for (const receipt of list) if (!receipts.some((r) => r.statisticId === receipt.statisticId)) receipts.push(receipt);
      };
      // Verified statistics are committed in groups (at most 64 or 64 MiB at a time, and at the end of the
      // stream); a stream cut off, or one that fails, still commits what verified before it. A full group is
      // committed in the background while the stream goes on (its fsyncs overlap the next chunks): an ack says
      // "stored", never "committed" (a stored statistic survives a coordinator crash, and restart recovery
      // commits it after hashing it again); the reply's receipts, sent once every group is durable, are the
      // commit. Groups commit in order (the coordinator chains an owner's commits).
      const commit = async (): Promise<void> => addReceipts(await coordinator.commit(who, batch));
      const background = new Set<Promise<void>>();
      const commitInBackground = (): void => {
        const work = commit()
          .catch((error: unknown) => fail(error))
          .finally(() => background.delete(work));
        background.add(work);
      };
      const committed = async (): Promise<void> => {
        await Promise.all(background);
        await commit();
      };
      // Chunks are checked in order and acknowledged once stored; the agent keeps at most the job's window of
      // them unacknowledged (backpressure, and what an interruption can lose). The window is the job's once the
      // first chunk names it, the largest allowed before. A client past its window (sending ahead of the acks)
      // is paused, so HTTP/2 flow control holds it back; one whose chunks still pile up past the window and
      // WINDOW_OVERRUN_CHUNKS is cancelled with RESOURCE_EXHAUSTED. Memory held per stream stays bounded
      // whatever the client does. Chunks are stored concurrently, up to the window: what must follow the
      // stream's order (the checks, and a large statistic's running digest) runs when a chunk's turn in the
      // queue comes, before its write is started, so the next chunk is hashed while this one is being written
      // (waiting for a chunk's write and its `.held` line before looking at the next took 27 of the ≈ 40 ms
      // between two 4 MiB chunks of a BERT-base-size upload on this machine). A chunk sent again waits for its
      // first copy to be stored.
      let queue = Promise.resolve();
      let pending = 0;
      let window = MAX_UPLOAD_WINDOW;
      const storing = new Map<string, Promise<void>>();
      const stored = async (chunk: federation.Chunk): Promise<void> => {
        const result = await coordinator.acceptChunk(who, chunkFromProto(chunk), batch);
        if (result.skipped) skipped++;
        else received++;
        if (result.receipt !== undefined) addReceipts([result.receipt]);
        if (batch.entries.length >= 64 || batch.bytes >= 64 * 1024 * 1024) {
          // One group in flight at a time: a disk slower than the stream holds the acks back, never queues groups.
          await Promise.all(background);
          commitInBackground();
        }
        if (!failed) call.write({ statisticId: chunk.statisticId, index: chunk.index });
      };
      const abort = async (error: unknown): Promise<void> => {
        await committed().catch(() => undefined);
        fail(error);
      };
      const settled = (): Promise<unknown> => Promise.all(storing.values());
      call.on('data', (chunk: federation.Chunk) => {
        pending++;
        if (pending > window) call.pause();
        if (pending > window + WINDOW_OVERRUN_CHUNKS) {
          fail(
            new GramfuseError(
              ErrorCode.ResourceExhausted,
              `${who} sent ${pending} chunks without waiting for their acknowledgements (the job's upload window is ${window}); wait for acks before sending more`,
              { facts: { identity: who, pending, window } },
            ),
          );
          return;
        }
        queue = queue.then(async () => {
          if (failed) return;
          try {
            decoded(chunk);
            // One stream carries one job's statistics, and only a participant's, into that job.
            if (streamJob === undefined) {
              authorize(who, 'job.upload', coordinator.access(chunk.jobId), auth);
              streamJob = chunk.jobId;
              window = coordinator.uploadWindow(streamJob);
            } else if (chunk.jobId !== streamJob) {
              throw new GramfuseError(
                ErrorCode.UploadInvalid,
                `a chunk for job ${chunk.jobId} arrived on an upload stream of job ${streamJob}; send each job's statistics on a stream of its own`,
                { facts: { job: streamJob, chunkJob: chunk.jobId } },
              );
            }
          } catch (error) {
            pending--;
            await abort(error);
            return;
          }
          const key = `${chunk.statisticId}\u0000${chunk.index}`;
          await storing.get(key);
          // stored() checks the chunk and feeds its statistic's digest before its first await: in the queue's order.
          const work = stored(chunk)
            .catch(abort)
            .finally(() => {
              if (storing.get(key) === work) storing.delete(key);
              pending--;
              if (pending <= window && call.isPaused()) call.resume();
            });
          storing.set(key, work);
        });
      });
      call.on('end', () => {
        finished = true;
        void queue.then(settled).then(async () => {
          if (failed) return;
          try {
            await committed();
            if (failed) return;
            call.write({
              statisticId: '',
              index: 0,
              reply: { receipts: receipts.map(receiptToProto), chunksReceived: received, chunksSkipped: skipped },
            });
            call.end();
          } catch (error) {
            fail(error);
          }
        });
      });
      const abandoned = (): void => {
        if (!finished)
          void queue
            .then(settled)
            .then(committed)
            .catch(() => undefined);
      };
      call.on('cancelled', abandoned);
    },
  } satisfies federation.UploadsServer);

  server.addService(withCodedDecoding(federation.ResultsService), {
    download: (call: grpc.ServerWritableStream<federation.DownloadRequest, federation.DownloadChunk>) => {
      void (async () => {
        try {
          decoded(call.request);
          const artifact = await coordinator.artifactFile(
            guard(call, call.request.artifact === 'report.json' ? 'report.read' : 'result.read', call.request.jobId),
            call.request.jobId,
            call.request.artifact,
          );
          // Read a slice at a time as the stream drains: memory holds one chunk, whatever the artifact's size.
          const file = await open(artifact.path, 'r');
          try {
            const chunk = 1024 * 1024;
            for (let offset = Number(call.request.offset); offset < artifact.bytes; offset += chunk) {
              const data = new Uint8Array(Math.min(chunk, artifact.bytes - offset));
              const { bytesRead } = await file.read(data, 0, data.byteLength, offset);
              if (bytesRead !== data.byteLength)
                throw new GramfuseError(ErrorCode.Internal, `${artifact.path}: shorter than ${artifact.bytes} bytes`);
              const ok = call.write({ offset: BigInt(offset), data, totalBytes: BigInt(artifact.bytes), sha256: artifact.sha256 });
              if (!ok) await new Promise((resolve) => call.once('drain', resolve));
            }
          } finally {
            await file.close();
          }
          call.end();
        } catch (error) {
          // grpc-js sends a status for an 'error' event on a server stream (destroy() would not).
          call.emit('error', toStatus(error));
        }
      })();
    },
    reportEvaluation: unary<federation.EvaluationReport, federation.EvaluationReply>(async (call) => {
      await coordinator.recordEvaluation(guard(call, 'result.report', call.request.jobId), call.request.jobId, {
        examples: Number(call.request.examples),
        accuracy: call.request.accuracy,
        macroF1: call.request.macroF1,
      });
      return { recorded: true };
    }),
  } satisfies federation.ResultsServer);

  server.addService(withCodedDecoding(federation.SolvesService), {
    // A solver worker fetches a part of a group's task: streamed from the file a slice at a time.
    fetchInput: (call: grpc.ServerWritableStream<federation.SolveInputRequest, federation.SolveInputChunk>) => {
      void (async () => {
        try {
          decoded(call.request);
          const { jobId, group, part, sha256 } = call.request;
          const input = coordinator.solveInput(identity(call), jobId, group, part, sha256, {
            streamSequence: Number(call.request.streamSequence),
            count: call.request.delivery,
          });
          if (input.committed) {
            // The group needs no more answers: one empty chunk of total size 0 says so.
            call.write({ offset: 0n, data: new Uint8Array(0), totalBytes: 0n, lease: '' });
            call.end();
            return;
          }
          const file = await open(input.path, 'r');
          try {
            const chunk = 4 * 1024 * 1024;
            for (let offset = Number(call.request.offset); offset < input.bytes; offset += chunk) {
              const data = new Uint8Array(Math.min(chunk, input.bytes - offset));
              const { bytesRead } = await file.read(data, 0, data.byteLength, offset);
              if (bytesRead !== data.byteLength)
                throw new GramfuseError(ErrorCode.StateCorrupt, `${input.path}: shorter than ${input.bytes} bytes`);
              // The delivery's lease rides on the first chunk.
              const lease = offset === Number(call.request.offset) ? input.lease : '';
              if (!call.write({ offset: BigInt(offset), data, totalBytes: BigInt(input.bytes), lease }))
                await new Promise((resolve) => call.once('drain', resolve));
            }
          } finally {
            await file.close();
          }
          call.end();
        } catch (error) {
          call.emit('error', toStatus(error));
        }
      })();
    },
    // A solver worker's answer: a header, then X in slices, written to a file beside the job's solve as it arrives
    // (memory holds one slice), its size and SHA-256 checked, then checked and committed by the executor.
    submit: (call: grpc.ServerReadableStream<federation.SolutionChunk, federation.SolutionReply>, callback) => {
      let header: AnswerHeader | undefined;
      let who = '';
      let target: { path: string; bytes: number; handle: FileHandle; hash: Hash; received: number } | undefined;
      let answered = false;
      let queue = Promise.resolve();
      // Backpressure as on Upload: past SUBMIT_WINDOW slices decoded and not yet written the stream is paused (HTTP/2
      // flow control holds the worker back), and one whose slices still pile up past WINDOW_OVERRUN_CHUNKS more is
      // cancelled with RESOURCE_EXHAUSTED; memory per Submit stays bounded whatever the worker sends.
      let pending = 0;
      const answer = (error: unknown, reply?: federation.SolutionReply): void => {
        if (answered) return;
        answered = true;
        if (target !== undefined) void target.handle.close().catch(() => undefined);
        if (error !== null && target !== undefined) void rm(target.path, { force: true });
        if (error === null) callback(null, reply);
        else callback(toStatus(error));
        call.destroy();
      };
      call.on('data', (message: federation.SolutionChunk) => {
        pending++;
        if (pending > SUBMIT_WINDOW) call.pause();
        if (pending > SUBMIT_WINDOW + WINDOW_OVERRUN_CHUNKS) {
          answer(
            new GramfuseError(
              ErrorCode.ResourceExhausted,
              `${who || 'a solver'} sent ${pending} solution slices without waiting for them to be written (the window is ${SUBMIT_WINDOW}); respect the stream's backpressure`,
              { facts: { pending, window: SUBMIT_WINDOW } },
            ),
          );
          return;
        }
        queue = queue.then(async () => {
          try {
            if (answered) return;
            await receive(message);
          } finally {
            pending--;
            if (pending <= SUBMIT_WINDOW && call.isPaused()) call.resume();
          }
        });
      });
      const receive = async (message: federation.SolutionChunk): Promise<void> => {
        try {
          decoded(message);
          if (header === undefined) {
            const h = message.header;
            if (h === undefined) throw new GramfuseError(ErrorCode.UploadInvalid, 'a Submit stream starts with the solution header');
            who = identity(call);
            header = {
              jobId: h.jobId,
              group: h.group,
              gramSha256: h.gramSha256,
              n: h.n,
              rhs: h.rhs,
              jitter: h.jitter,
              conditionEstimate: h.conditionEstimate,
              seconds: h.seconds,
              device: h.device,
              errorCode: h.errorCode,
              errorMessage: h.errorMessage,
              delivery: h.delivery,
              lastDelivery: h.lastDelivery,
              lease: h.lease,
              sha256: h.sha256,
            };
            if (h.errorCode !== '') {
              answer(null, coordinator.recordAnswerError(who, header));
              return;
            }
            const begun = coordinator.beginAnswer(who, header);
            if ('outcome' in begun) {
              // Nothing to receive (the group is committed, or the lease is stale): no byte of X is written.
              answer(null, begun);
              return;
            }
            await mkdir(dirname(begun.path), { recursive: true });
            target = { ...begun, handle: await open(begun.path, 'wx', 0o600), hash: createHash('sha256'), received: 0 };
            return;
          }
          if (target === undefined) return;
          if (target.received + message.data.byteLength > target.bytes)
            throw new GramfuseError(
              ErrorCode.UploadInvalid,
              `the solution of group ${header.group} is longer than its ${target.bytes} bytes`,
              {
                facts: { job: header.jobId, group: header.group },
              },
            );
          await writeAll(target.handle, message.data, target.received);
          target.hash.update(message.data);
          target.received += message.data.byteLength;
        } catch (error) {
          answer(error);
        }
      };
      call.on('end', () => {
        void queue.then(async () => {
          if (answered) return;
          try {
            if (header === undefined || target === undefined)
              throw new GramfuseError(ErrorCode.UploadInvalid, 'the Submit stream ended before the solution was sent');
            const digest = target.hash.digest('hex');
            const claimed = header.sha256;
            if (target.received !== target.bytes || digest !== claimed)
              throw new GramfuseError(
                ErrorCode.UploadInvalid,
                `the solution of group ${header.group} arrived as ${target.received} bytes with SHA-256 ${digest.slice(0, 16)}…, the header says ${target.bytes} bytes with ${claimed.slice(0, 16)}…; nothing was kept`,
                { facts: { job: header.jobId, group: header.group } },
              );
            // Not fsynced: an answer is void after a restart (the worker that gets no reply submits again), and
            // the group it solves is made durable by its commit.
            await target.handle.close();
            const path = target.path;
            target = undefined;
            answer(null, await coordinator.settleAnswer(who, header, path));
          } catch (error) {
            answer(error);
          }
        });
      });
      call.on('cancelled', () => answer(new GramfuseError(ErrorCode.Unavailable, 'the Submit stream was cancelled')));
    },
  } satisfies federation.SolvesServer);

  // Secure aggregation's rounds: JSON bodies validated by zod (shared/secure-aggregation/protocol.ts), every call
  // authorized as secure.exchange; Advertise also takes the caller's certificate, which the other owners check its keys by.
  const secureCall =
    (handle: (who: string, jobId: string, body: string, call: Call) => Promise<RoundView> | RoundView) =>
    async (call: grpc.ServerUnaryCall<federation.SecureRequest, federation.SecureRoundReply>): Promise<federation.SecureRoundReply> => {
      const who = guard(call, 'secure.exchange', call.request.jobId);
      return { roundJson: JSON.stringify(await handle(who, call.request.jobId, call.request.bodyJson, call)) };
    };
  server.addService(withCodedDecoding(federation.SecureAggregationService), {
    advertise: unary(
      secureCall((who, jobId, body, call) => {
        const raw = insecure ? undefined : call.getAuthContext().sslPeerCertificate?.raw;
        const pem = raw === undefined ? undefined : new X509Certificate(raw).toString();
        return coordinator.secureAdvertise(who, jobId, parseSecure(AdvertiseBody, body, 'Advertise body'), pem);
      }),
    ),
    share: unary(secureCall((who, jobId, body) => coordinator.secureShare(who, jobId, parseSecure(ShareBody, body, 'Share body')))),
    confirm: unary(secureCall((who, jobId, body) => coordinator.secureConfirm(who, jobId, parseSecure(ConfirmBody, body, 'Confirm body')))),
    reveal: unary(secureCall((who, jobId, body) => coordinator.secureReveal(who, jobId, parseSecure(RevealBody, body, 'Reveal body')))),
    round: unary(secureCall((who, jobId) => coordinator.secureRound(who, jobId))),
  } satisfies federation.SecureAggregationServer);

  const credentials = insecure
    ? grpc.ServerCredentials.createInsecure()
    : grpc.ServerCredentials.createSsl(
        Buffer.from(options.tls.caPem),
        [{ private_key: Buffer.from(options.tls.keyPem), cert_chain: Buffer.from(options.tls.certPem) }],
        true,
      );
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(options.listen, credentials, (error, boundPort) =>
      error === null
        ? resolve(boundPort)
        : reject(new GramfuseError(ErrorCode.FileAccess, `cannot listen on ${options.listen}: ${error.message}`)),
    );
  });
  state = 'serving';
  const close = async (graceMs = 5000): Promise<void> => {
    if (state === 'stopped') return;
    state = 'draining';
    await Promise.race([coordinator.drain(), new Promise((resolve) => setTimeout(resolve, graceMs))]);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, graceMs);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (publisher !== undefined) {
      const left = await publisher.flush(Math.min(graceMs, 5000));
      if (left > 0) options.log?.(`audit: ${left} record(s) not yet on NATS; they are published at the next start`);
      await publisher.close();
    }
    await events?.close();
    await solveExecutor?.close();
    state = 'stopped';
  };
  return { port, coordinator, state: () => state, close, [Symbol.asyncDispose]: () => close() };
}
