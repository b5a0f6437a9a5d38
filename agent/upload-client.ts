import { createHash } from 'node:crypto';
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

import * as grpc from '@grpc/grpc-js';

import { federation } from '../proto/index.js';
import { ErrorCode, errorFromGrpc, fileError, GramfuseError, writeFileAtomic } from '../shared/index.js';
import { FileLedger, readLedgerRecords } from '../shared/audit/index.js';
import { BUNDLE_TENSORS, type BundleManifest, DisclosurePolicy, MergeSpec, parseSafetensors, readBundle } from '../shared/merge/index.js';
import { AuditPublisher } from '../shared/nats/index.js';
import { certificateName, verifyFields, signingKeysAt } from '../shared/security/index.js';
import type { Progress } from './collect.js';
import { type AgentOptions, collectBundle, planForOwner } from './commands.js';
import { combinePolicies, type EffectivePolicy, type OwnerPolicy, ownerPolicy } from './policy.js';

/** mTLS material of an agent: the federation CA and its own certificate (whose subject is its identity). */
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
  getJob(jobId: string): Promise<federation.JobStatus>;
  createJob(specJson: string, template: Uint8Array | { readonly path: string }): Promise<federation.JobStatus>;
  join(request: federation.JoinRequest): Promise<federation.UploadState>;
  uploadState(jobId: string): Promise<federation.UploadState>;
  upload(chunks: AsyncIterable<federation.Chunk>, deadlineSeconds: number): Promise<federation.UploadReply>;
  download(jobId: string, artifact: string): Promise<Buffer>;
  /**
   * Streams an artifact into `path`: written beside it, its SHA-256 checked against the coordinator's
   * digest (and `expectedSha256` when given, e.g. the job status's `resultSha256`), fsynced, renamed into
   * place. A mismatch leaves no file and is UPLOAD_INVALID. Returns the digest and size.
   */
  downloadTo(jobId: string, artifact: string, path: string, expectedSha256?: string): Promise<{ sha256: string; bytes: number }>;
  reportEvaluation(report: federation.EvaluationReport): Promise<void>;
  watch(jobId: string, onStatus: (status: federation.JobStatus) => void): Promise<federation.JobStatus>;
  close(): void;
}

// RESOURCE_EXHAUSTED is a limit of the coordinator's: retrying would only hit it again.
const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]);

/** Retries a call on retryable gRPC codes only, with exponential backoff and full jitter. */
export async function withRetries<T>(call: () => Promise<T>, attempts = 5, address?: string): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const code = (error as { code?: number }).code;
      if (attempt >= attempts || code === undefined || !RETRYABLE.has(code))
        throw error instanceof GramfuseError ? error : errorFromGrpc(error as grpc.ServiceError, address);
      const delay = Math.random() * Math.min(8000, 250 * 2 ** attempt);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
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
  const retry = <T>(call: () => Promise<T>): Promise<T> => withRetries(call, 5, options.address);
  const credentials =
    options.tls === undefined
      ? grpc.credentials.createInsecure()
      : grpc.credentials.createSsl(Buffer.from(options.tls.caPem), Buffer.from(options.tls.keyPem), Buffer.from(options.tls.certPem));
  const identity = options.tls === undefined ? (options.insecureIdentity ?? '') : certificateName(options.tls.certPem);
  const channelOptions = { 'grpc.max_receive_message_length': 5 * 1024 * 1024 };
  const jobs = new federation.JobsClient(options.address, credentials, channelOptions);
  const uploads = new federation.UploadsClient(options.address, credentials, channelOptions);
  const results = new federation.ResultsClient(options.address, credentials, channelOptions);
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
    getJob: (jobId) => retry(() => unary(jobs.get.bind(jobs), { jobId })),
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
    uploadState: (jobId) => retry(() => unary(uploads.state.bind(uploads), { jobId })),
    upload: (chunks, deadlineSeconds) =>
      new Promise((resolve, reject) => {
        const stream = uploads.upload(metadata(), { deadline: deadline(deadlineSeconds) });
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
              // At most one chunk unacknowledged (and the next one is not even produced before the ack): a dropped
              // link or a coordinator crash loses only the chunk in flight.
              while (sent - acked >= 1 && !stopped) await new Promise<void>((r) => (wake = r));
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
    },
  };
}

export interface RunAgentOptions extends Omit<AgentOptions, 'spec' | 'policy' | 'owner' | 'expectFingerprint'> {
  /**
   * The owner's own limits (flags, policy file), combined with the job's strictest-wins; a job that asks for
   * more than they allow is refused with POLICY_VIOLATION before anything is computed.
   * @default the DisclosurePolicy defaults (at least 256 rows per Gram, every layer, any fingerprint)
   */
  readonly ownerPolicy?: OwnerPolicy;
  /** Called with the policy in force for this job and where each rule came from. */
  readonly onPolicy?: (effective: EffectivePolicy) => void;
  readonly connect: ConnectOptions;
  readonly jobId: string;
  /** Where the agent keeps its bundle and receipts for this job (reused on restart). */
  readonly workDir: string;
  /** Approval: true skips the question (automation); otherwise `approve` is asked. */
  readonly yes: boolean;
  readonly approve?: (planText: string) => Promise<boolean>;
  readonly chunkBytes?: number;
  readonly onPlan?: (plan: BundleManifest['plan'], examples: number) => void;
  readonly onCollect?: (progress: Progress) => void;
  /** Called before each chunk is sent; a returned promise is awaited (tests use it to cut the link). */
  readonly onUpload?: (sentBytes: number, totalBytes: number) => void | Promise<void>;
  /** NATS with JetStream: the agent's audit records are also published there (what is not, is published next run). */
  readonly nats?: string;
  /** Upload attempts on UNAVAILABLE / DEADLINE_EXCEEDED (a dropped link, a restarting coordinator). Default 5. */
  readonly uploadAttempts?: number;
  readonly onRetry?: (attempt: number, error: GramfuseError) => void;
}

export interface RunAgentResult {
  readonly owner: string;
  /** The agent's audit ledger: what it approved and every receipt it got. */
  readonly ledger: string;
  readonly bundle: string;
  readonly receiptsPath: string;
  readonly receipts: number;
  readonly chunksSent: number;
  readonly chunksSkipped: number;
  readonly bytesSent: number;
  readonly reusedBundle: boolean;
  /** With `nats`: audit records not yet published when the agent stopped (they stay in the ledger file). */
  readonly auditBacklog?: number;
  /** Wall time of collection (0 when the bundle was reused) and of join + upload + receipts. */
  readonly seconds: { readonly collect: number; readonly upload: number };
  /** This process's peak resident memory so far (from the OS). */
  readonly peakRssMb: number;
}

/**
 * `gramfuse agent run`: fetch the job, plan, get approval, collect (or reuse this job's bundle), join,
 * and upload only what the coordinator does not hold; every receipt is verified and saved locally.
 */
export async function runAgent(options: RunAgentOptions): Promise<RunAgentResult> {
  const client = connectFederation(options.connect);
  let publisher: AuditPublisher | undefined;
  try {
    const status = await client.getJob(options.jobId);
    // A closed job accepts nothing new, but an agent whose statistics were committed (its run was cut off,
    // or the coordinator committed them while recovering) still collects its receipts from it.
    const closed = status.state === 'done' || status.state === 'failed' || status.state === 'solving';
    const closedError = (): GramfuseError =>
      new GramfuseError(ErrorCode.JobClosed, `job ${options.jobId} is ${status.state}; it accepts no more statistics`, {
        facts: { job: options.jobId },
      });
    const spec = MergeSpec.parse(JSON.parse(status.mergeSpecJson));
    const jobPolicy = DisclosurePolicy.parse(JSON.parse(status.policyJson));
    // The owner's word is final: the job's policy can only tighten the owner's.
    const effective = combinePolicies(
      options.ownerPolicy ?? ownerPolicy({ minRowsPerGroup: DisclosurePolicy.parse({}).minRowsPerGroup, minRowsGiven: false }),
      jobPolicy,
      status.fingerprint,
    );
    options.onPolicy?.(effective);
    const policy = effective.policy;
    const agentOptions: AgentOptions = { ...options, spec, policy, owner: client.identity, expectFingerprint: status.fingerprint };
    const jobDir = join(options.workDir, options.jobId);
    const bundleDir = join(jobDir, 'bundle');
    await mkdir(jobDir, { recursive: true });
    let manifest: BundleManifest;
    let reusedBundle = false;
    let collectSeconds = 0;
    let existing: Awaited<ReturnType<typeof readBundle>> | undefined;
    try {
      existing = await readBundle(bundleDir);
    } catch (error) {
      if ((error as GramfuseError).code !== ErrorCode.FileNotFound) throw error;
    }
    if (
      existing !== undefined &&
      existing.manifest.plan.fingerprint === status.fingerprint &&
      JSON.stringify(existing.manifest.plan.spec) === JSON.stringify(spec) &&
      JSON.stringify(existing.manifest.plan.policy) === JSON.stringify(policy)
    ) {
      manifest = existing.manifest;
      reusedBundle = true;
      options.onPlan?.(manifest.plan, Number(manifest.settings.examples ?? 0));
    } else {
      if (closed) throw closedError();
      const { plan, examples } = await planForOwner(agentOptions);
      options.onPlan?.(plan, examples);
      if (!options.yes) {
        const approved =
          options.approve === undefined
            ? false
            : await options.approve(`${plan.totals.statistics} statistics, ${plan.totals.bytes} bytes, to ${options.connect.address}`);
        if (!approved) {
          throw new GramfuseError(
            ErrorCode.NotAuthorized,
            'the owner did not approve the disclosure plan; nothing was computed or sent (read it with `gramfuse agent plan`, then rerun with --yes)',
          );
        }
      }
      const collectStarted = performance.now();
      manifest = (
        await collectBundle({
          ...agentOptions,
          out: bundleDir,
          ...(options.onCollect === undefined ? {} : { onProgress: options.onCollect }),
        })
      ).manifest;
      collectSeconds = (performance.now() - collectStarted) / 1000;
    }
    const uploadStarted = performance.now();
    const ledger = await openAgentLedger(options.workDir, client.identity);
    publisher =
      options.nats === undefined ? undefined : await AuditPublisher.start(ledger, options.nats, `gramfuse agent ${client.identity}`);
    // The approval is recorded once per job. A bundle reused without a recorded approval (the agent stopped
    // between collecting and recording, or the bundle was copied here) is approved again before anything is sent.
    // What this job's earlier runs recorded: the approval, and the receipts already kept (read once).
    const earlier = (await readLedgerRecords(ledger.path)).map((r) => r.record).filter((r) => r.job === options.jobId);
    const approvalRecorded = earlier.some((r) => r.kind === 'plan.approved');
    if (!approvalRecorded && reusedBundle && !options.yes) {
      const approved =
        options.approve === undefined
          ? false
          : await options.approve(
              `${manifest.plan.totals.statistics} statistics, ${manifest.plan.totals.bytes} bytes, to ${options.connect.address}`,
            );
      if (!approved)
        throw new GramfuseError(
          ErrorCode.NotAuthorized,
          'the owner did not approve the disclosure plan; nothing was sent (rerun with --yes to approve)',
        );
    }
    if (!approvalRecorded) {
      await ledger.append('plan.approved', options.jobId, {
        coordinator: options.connect.address,
        approvedBy: options.yes ? '--yes' : 'prompt',
        fingerprint: manifest.plan.fingerprint,
        spec: manifest.plan.spec,
        policy: manifest.plan.policy,
        totals: manifest.plan.totals,
        statistics: manifest.plan.statistics.map((s) => ({
          id: s.id,
          shape: s.shape,
          dtype: s.dtype,
          bytes: s.bytes,
          rows: s.rows ?? null,
          sha256: s.sha256 ?? null,
        })),
      });
    }
    const file = await readFile(join(bundleDir, BUNDLE_TENSORS)).catch((error: unknown) => {
      throw fileError(error, join(bundleDir, BUNDLE_TENSORS), 'reading the statistics bundle');
    });
    const { tensors } = parseSafetensors(file, (reason) => new GramfuseError(ErrorCode.BundleInvalid, `${bundleDir}: ${reason}`));
    const chunkBytes = options.chunkBytes ?? 4 * 1024 * 1024;
    let sent = 0;
    let chunksSent = 0;
    let chunksSkipped = 0;
    async function* chunks(
      pending: readonly (typeof manifest.plan.statistics)[number][],
      held: ReadonlyMap<string, { held: number[] }>,
      total: number,
    ): AsyncGenerator<federation.Chunk> {
      for (const s of pending) {
        const bytes = tensors.get(s.id)!.bytes;
        const count = Math.max(1, Math.ceil(bytes.byteLength / chunkBytes));
        const have = new Set(held.get(s.id)?.held ?? []);
        for (let index = 0; index < count; index++) {
          if (have.has(index)) continue;
          const data = bytes.subarray(index * chunkBytes, Math.min(bytes.byteLength, (index + 1) * chunkBytes));
          await options.onUpload?.(sent + data.byteLength, total);
          sent += data.byteLength;
          chunksSent++;
          yield federation.Chunk.fromPartial({
            jobId: options.jobId,
            statisticId: s.id,
            dtype: s.dtype,
            shape: s.shape.map(BigInt),
            packing: s.packing,
            index,
            count,
            offset: BigInt(index * chunkBytes),
            data,
            sha256: createHash('sha256').update(data).digest('hex'),
          });
        }
      }
    }
    // Join (idempotent) → what the coordinator holds → send the rest. A dropped link or an unavailable
    // coordinator is retried with backoff and jitter; each retry asks again, so nothing committed is resent.
    const attempts = options.uploadAttempts ?? 5;
    for (let attempt = 1; ; attempt++) {
      try {
        const state = await client.join({ jobId: options.jobId, fingerprint: status.fingerprint, manifestJson: JSON.stringify(manifest) });
        const held = new Map(state.statistics.map((s) => [s.statisticId, s]));
        const pending = manifest.plan.statistics.filter((s) => held.get(s.id)?.committed !== true);
        if (pending.length > 0) {
          const total = pending.reduce((sum, s) => sum + s.bytes, 0);
          const reply = await client.upload(chunks(pending, held, total), 600);
          chunksSkipped += reply.chunksSkipped;
        }
        break;
      } catch (error) {
        const coded = error instanceof GramfuseError ? error : errorFromGrpc(error as grpc.ServiceError, options.connect.address);
        if (coded.code === ErrorCode.JobClosed) break; // solving already: what was committed is what counts
        const retryable = coded.code === ErrorCode.Unavailable || coded.code === ErrorCode.DeadlineExceeded;
        if (!retryable || attempt >= attempts) throw coded;
        options.onRetry?.(attempt, coded);
        await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(8000, 250 * 2 ** attempt)));
      }
    }
    // Every committed statistic's receipt comes with the coordinator's state, so receipts whose reply was
    // lost (a cut link, a crash of either side) are recovered too; each is verified before it is kept.
    const after = await client.uploadState(options.jobId);
    const committedIds = new Set(after.statistics.filter((s) => s.committed).map((s) => s.statisticId));
    const missing = manifest.plan.statistics.filter((s) => !committedIds.has(s.id)).map((s) => s.id);
    if (missing.length > 0) {
      if (closed || (await client.getJob(options.jobId)).state !== 'collecting') throw closedError();
      throw new GramfuseError(
        ErrorCode.Unavailable,
        `${missing.length} statistics are not committed yet (${missing
          .slice(0, 3)
          .map((id) => `${id}: ${after.statistics.find((x) => x.statisticId === id)?.held.length ?? 0} chunks held`)
          .join(', ')}); run the same command again to resume`,
        { facts: { missing: missing.length } },
      );
    }
    const receiptsPath = join(jobDir, 'receipts.jsonl');
    // The agent's ledger says which receipts are already recorded (receipts.jsonl is a copy written after it).
    const known = new Set(earlier.filter((r) => r.kind === 'receipt.issued').map((r) => String(r.facts.statistic)));
    const planned = new Map(manifest.plan.statistics.map((s) => [s.id, s]));
    const lines: string[] = [];
    const records: Parameters<FileLedger['appendAll']>[0][number][] = [];
    for (const r of after.statistics.flatMap((s) => (s.receipt === undefined || known.has(s.statisticId) ? [] : [s.receipt]))) {
      const fields = {
        jobId: r.jobId,
        owner: r.owner,
        statisticId: r.statisticId,
        sha256: r.sha256,
        bytes: Number(r.bytes),
        committedAt: r.committedAt,
      };
      if (
        !verifyFields(fields, r.signature, status.receiptPublicKey) ||
        planned.get(r.statisticId)?.sha256 !== r.sha256 ||
        r.owner !== client.identity
      ) {
        throw new GramfuseError(
          ErrorCode.UploadInvalid,
          `receipt for ${r.statisticId} does not verify against the coordinator's key and this bundle's digest`,
          { facts: { statistic: r.statisticId } },
        );
      }
      lines.push(`${JSON.stringify({ ...fields, signature: r.signature })}\n`);
      records.push({
        kind: 'receipt.issued',
        job: options.jobId,
        facts: {
          coordinator: options.connect.address,
          statistic: r.statisticId,
          sha256: r.sha256,
          bytes: Number(r.bytes),
          committedAt: r.committedAt,
          coordinatorSignature: r.signature,
          coordinatorKey: status.receiptPublicKey,
        },
      });
    }
    // Receipts are verified all before any is kept; then recorded (one fsynced ledger write) and copied.
    await ledger.appendAll(records);
    if (lines.length > 0) await appendFile(receiptsPath, lines.join(''));
    return {
      owner: client.identity,
      ledger: ledger.path,
      bundle: bundleDir,
      receiptsPath,
      receipts: lines.length,
      chunksSent,
      chunksSkipped,
      bytesSent: sent,
      reusedBundle,
      ...(publisher === undefined ? {} : { auditBacklog: await publisher.flush(10_000) }),
      seconds: { collect: collectSeconds, upload: (performance.now() - uploadStarted) / 1000 },
      peakRssMb: process.resourceUsage().maxRSS / 1024,
    };
  } finally {
    client.close();
    await publisher?.close();
  }
}

/** The agent's ledger (work dir/audit.jsonl), signed with a key made on this machine and kept beside it. */
export async function openAgentLedger(workDir: string, identity: string): Promise<FileLedger> {
  // The keys directory is the owner's alone; the key file in it is 0600 (signingKeysAt).
  await mkdir(join(workDir, 'keys'), { recursive: true, mode: 0o700 });
  const keys = await signingKeysAt(join(workDir, 'keys', 'audit.json'), "agent's audit signing key");
  return FileLedger.open(join(workDir, 'audit.jsonl'), keys, identity);
}
