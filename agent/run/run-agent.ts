// `gramfuse agent run`: approval, policy (the owner's, strictest wins), bundle reuse, chunk upload, receipts, and
// the agent's ledger.
import { appendFile, type FileHandle, mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';

import { chunkMessage, ChunkMessagePool, codedError, type ConnectOptions, connectFederation, withRetries } from '../../client/index.js';
import { ErrorCode, failpoint, fileError, GramfuseError } from '../../shared/index.js';
import { type FileLedger, readLedgerRecords } from '../../shared/audit/index.js';
import {
  chunkCount,
  chunkLength,
  DEFAULT_CHUNK_BYTES,
  PrivacySpec,
  readChunk,
  receiptFields,
  secureThreshold,
} from '../../shared/federation/index.js';
import {
  BUNDLE_TENSORS,
  type BundleManifest,
  DisclosurePolicy,
  joinManifest,
  MergeSpec,
  readSafetensorsHeader,
  type VerifiedBundle,
  verifyBundle,
} from '../../shared/merge/index.js';
import { AuditPublisher, type NatsTarget } from '../../shared/nats/index.js';
import { verifyFields } from '../../shared/security/index.js';
import { memoryTarget, type Progress } from '../collect/index.js';
import { type AgentOptions, collectBundle, planForOwner } from '../commands.js';
import { combinePolicies, type EffectivePolicy, type OwnerPolicy, ownerPolicy } from '../policy.js';
import { openAgentLedger } from './ledger.js';
import { type ApprovedTerms, survivorsNeeded } from '../../shared/secure-aggregation/index.js';
import { checkApprovedBefore, type SecureProgress, SecureSession } from './secure-aggregation.js';

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
  /**
   * Chunks in flight unacknowledged: at most the job's `limits.uploadWindow`, which is the default.
   * An interrupted upload re-sends at most this many.
   */
  readonly uploadWindow?: number;
  readonly onPlan?: (plan: BundleManifest['plan'], examples: number) => void;
  readonly onCollect?: (progress: Progress) => void;
  /** Called before each chunk is sent; a returned promise is awaited (tests use it to cut the link). */
  readonly onUpload?: (sentBytes: number, totalBytes: number) => void | Promise<void>;
  /** NATS with JetStream: the agent's audit records are also published there (what is not, is published next run). */
  readonly nats?: NatsTarget;
  /** Upload attempts on UNAVAILABLE / DEADLINE_EXCEEDED (a dropped link, a restarting coordinator). Default 5. */
  readonly uploadAttempts?: number;
  readonly onRetry?: (attempt: number, error: GramfuseError) => void;
  /** Secure aggregation: how long to wait for the other owners in each round. @default 3600 */
  readonly secureWaitSeconds?: number;
  /** Secure aggregation: each round's progress (advertised, shared, masking, waiting, revealed). */
  readonly onSecure?: (progress: SecureProgress) => void;
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
  /** The upload window used (the job's, or the owner's smaller one). */
  readonly uploadWindow: number;
  readonly reusedBundle: boolean;
  /**
   * Secure aggregation: the statistics went up masked (fixed point in Z/2⁶⁴): their largest absolute resolution, and
   * the entries masked and the seconds masking took (0 when this run reused a masked bundle).
   */
  readonly secureAggregation?: { readonly maxResolution: number; readonly maskedEntries: number; readonly maskSeconds: number };
  /** With `nats`: audit records not yet published when the agent stopped (they stay in the ledger file). */
  readonly auditBacklog?: number;
  /**
   * Wall time of collection (0 when the bundle was reused) and of join + upload + receipts; `uploadPhases` splits
   * the upload: `prepare` (the ledger, the approval record, secure rounds and masking), `join` (the join calls),
   * `stream` (the upload streams, the coordinator's group commits included), `receipts` (fetched, verified and
   * recorded); what is left of `upload` is a secure job's unmasking.
   */
  readonly seconds: {
    readonly collect: number;
    readonly upload: number;
    readonly uploadPhases: { readonly prepare: number; readonly join: number; readonly stream: number; readonly receipts: number };
  };
  /** This process's peak resident memory so far (from the OS). */
  readonly peakRssMb: number;
  /**
   * When this run collected: its passes over the data, the budget they were planned for, and the memory target
   * (model + 1.5 × the largest pass + 500 MiB) the peak is held to.
   */
  readonly memory?: { readonly passes: number; readonly memoryBudgetMb: number; readonly memoryTargetMb: number };
}

/**
 * `gramfuse agent run`: fetch the job, plan, get approval, collect (or reuse this job's bundle), join,
 * and upload only what the coordinator does not hold; every receipt is verified and saved locally.
 */
export async function runAgent(options: RunAgentOptions): Promise<RunAgentResult> {
  const client = connectFederation(options.connect);
  let publisher: AuditPublisher | undefined;
  let bundleFile: FileHandle | undefined;
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
    // Secure aggregation changes what leaves (masked vectors, not the statistics): the owner is told before approving.
    const privacy = PrivacySpec.parse(JSON.parse(status.privacyJson === '' ? '{}' : status.privacyJson));
    // What the owner approves of a secure job: the threshold, the fewest owners and the participants by name. Persisted
    // with its secrets (secure-aggregation.ts); every later check uses these, never a later reply of the coordinator.
    const secureTerms: ApprovedTerms | undefined = privacy.secureAggregation
      ? {
          threshold: secureThreshold({ participants: status.participants, privacy }),
          minOwners: privacy.minOwners,
          participants: [...status.participants].sort(),
        }
      : undefined;
    const securely =
      secureTerms === undefined
        ? ''
        : `, masked (secure aggregation: the coordinator sees only the sum over at least ${survivorsNeeded(secureTerms)} owners; each statistic's power-of-two bound is the one figure of this owner's it learns; the keys are shared only with ${secureTerms.participants.join(', ')}, threshold ${secureTerms.threshold}, which withstands ${Math.max(0, 2 * secureTerms.threshold - secureTerms.participants.length - 1)} owner(s) colluding with the coordinator)`;
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
    const ledger = await openAgentLedger(options.workDir, client.identity);
    // What this job's earlier runs recorded: the approval, and the receipts already kept (read once).
    const earlier = (await readLedgerRecords(ledger.path)).map((r) => r.record).filter((r) => r.job === options.jobId);
    // By job alone, before anything is computed or sent: a job approved secure stays secure, with the terms approved
    // (whatever certificate the coordinator presents now), and an owner may require secure aggregation (issue 37 review).
    await checkApprovedBefore(
      options.jobId,
      jobDir,
      earlier.filter((r) => r.kind === 'plan.approved' && r.facts.secureAggregation !== undefined).map((r) => r.facts.secureAggregation),
      secureTerms,
      options.ownerPolicy?.requireSecureAggregation === true,
    );
    let manifest: BundleManifest;
    let reusedBundle = false;
    let collectSeconds = 0;
    let memory: RunAgentResult['memory'];
    let existing: VerifiedBundle | undefined;
    try {
      // Verified a slice at a time (bundles past 2 GiB too); its ranges are where the upload reads each chunk.
      existing = await verifyBundle(bundleDir);
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
            : await options.approve(
                `${plan.totals.statistics} statistics, ${plan.totals.bytes} bytes, to ${options.connect.address}${securely}`,
              );
        if (!approved) {
          throw new GramfuseError(
            ErrorCode.NotAuthorized,
            'the owner did not approve the disclosure plan; nothing was computed or sent (read it with `gramfuse agent plan`, then rerun with --yes)',
          );
        }
      }
      const collectStarted = performance.now();
      const collected = await collectBundle({
        ...agentOptions,
        out: bundleDir,
        ...(options.onCollect === undefined ? {} : { onProgress: options.onCollect }),
      });
      manifest = collected.manifest;
      memory = {
        passes: collected.result.passes.length,
        memoryBudgetMb: collected.result.memoryBudget / 2 ** 20,
        memoryTargetMb: memoryTarget(collected.result.modelBytes, collected.result.passes) / 2 ** 20,
      };
      collectSeconds = (performance.now() - collectStarted) / 1000;
    }
    const uploadStarted = performance.now();
    publisher =
      options.nats === undefined ? undefined : await AuditPublisher.start(ledger, options.nats, `gramfuse agent ${client.identity}`);
    // The approval is recorded once per job. A bundle reused without a recorded approval (the agent stopped
    // between collecting and recording, or the bundle was copied here) is approved again before anything is sent.
    const approvalRecorded = earlier.some((r) => r.kind === 'plan.approved');
    if (!approvalRecorded && reusedBundle && !options.yes) {
      const approved =
        options.approve === undefined
          ? false
          : await options.approve(
              `${manifest.plan.totals.statistics} statistics, ${manifest.plan.totals.bytes} bytes, to ${options.connect.address}${securely}`,
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
        ...(secureTerms === undefined ? {} : { secureAggregation: secureTerms }),
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
    // Chunks are read from statistics.safetensors as they are sent: memory holds one chunk, not the bundle.
    const bundlePath = join(bundleDir, BUNDLE_TENSORS);
    const bundleRanges =
      reusedBundle && existing !== undefined
        ? existing.ranges
        : (
            await readSafetensorsHeader(
              bundlePath,
              (reason: string) => new GramfuseError(ErrorCode.BundleInvalid, `${bundleDir}: ${reason}`),
            )
          ).entries;
    // Secure aggregation: the two key rounds, then the bundle masked in Z/2⁶⁴ is what goes up (secure-aggregation.ts).
    const secure =
      secureTerms !== undefined
        ? await SecureSession.open({
            client,
            jobId: options.jobId,
            owner: client.identity,
            approved: secureTerms,
            jobState: status.state,
            ...(options.ownerPolicy?.securePeers === undefined ? {} : { pins: options.ownerPolicy.securePeers }),
            ...(options.ownerPolicy?.minFractionBits === undefined ? {} : { minFractionBits: options.ownerPolicy.minFractionBits }),
            jobDir,
            ledger,
            tls: options.connect.tls,
            ...(options.secureWaitSeconds === undefined ? {} : { waitSeconds: options.secureWaitSeconds }),
            ...(options.onSecure === undefined ? {} : { onProgress: options.onSecure }),
          })
        : undefined;
    const upload = secure === undefined ? undefined : await secure.prepare(manifest, bundlePath, bundleRanges);
    const uploaded = upload?.manifest ?? manifest;
    const statisticsPath = upload?.statisticsPath ?? bundlePath;
    const ranges = upload?.ranges ?? bundleRanges;
    bundleFile = await open(statisticsPath, 'r').catch((error: unknown) => {
      throw fileError(error, statisticsPath, 'reading the statistics bundle');
    });
    const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    let sent = 0;
    let chunksSent = 0;
    let chunksSkipped = 0;
    let uploadWindow = 1;
    const phases = { prepare: (performance.now() - uploadStarted) / 1000, join: 0, stream: 0, receipts: 0 };
    const timed = async <T>(phase: 'join' | 'stream', work: Promise<T>): Promise<T> => {
      const begun = performance.now();
      try {
        return await work;
      } finally {
        phases[phase] += (performance.now() - begun) / 1000;
      }
    };
    async function* chunks(
      pending: readonly (typeof uploaded.plan.statistics)[number][],
      held: ReadonlyMap<string, { held: number[] }>,
      total: number,
      window: number,
    ): AsyncGenerator<Buffer> {
      const pool = new ChunkMessagePool(window);
      for (const s of pending) {
        const range = ranges.get(s.id)!;
        const size = range.end - range.begin;
        const have = new Set(held.get(s.id)?.held ?? []);
        const count = chunkCount(size, chunkBytes);
        for (let index = 0; index < count; index++) {
          if (have.has(index)) continue;
          // Read straight into the encoded message (a pooled buffer, no copy before grpc-js frames it).
          const wire = chunkMessage(
            {
              jobId: options.jobId,
              statisticId: s.id,
              dtype: s.dtype,
              shape: s.shape.map(BigInt),
              packing: s.packing,
              index,
              count,
              offset: BigInt(index * chunkBytes),
            },
            chunkLength(size, index, chunkBytes),
            pool,
          );
          const chunk = await readChunk(bundleFile!, range.begin, size, index, chunkBytes, s.sha256, wire.data);
          await options.onUpload?.(sent + chunk.data.byteLength, total);
          sent += chunk.data.byteLength;
          chunksSent++;
          yield wire.seal(chunk.sha256);
        }
      }
    }
    // Join (idempotent) → what the coordinator holds → send the rest. A dropped link or an unavailable
    // coordinator is retried with backoff and jitter; each retry asks again, so nothing committed is resent.
    try {
      await withRetries(
        async () => {
          const state = await timed(
            'join',
            client.join({
              jobId: options.jobId,
              fingerprint: status.fingerprint,
              // The approved plan and nothing else: the bundle's settings (local paths, memory, timings) stay here.
              manifestJson: JSON.stringify(joinManifest(uploaded)),
            }),
          );
          const held = new Map(state.statistics.map((s) => [s.statisticId, s]));
          const pending = uploaded.plan.statistics.filter((s) => held.get(s.id)?.committed !== true);
          // A coordinator from before upload windows sends 0: one chunk at a time.
          uploadWindow = Math.max(1, Math.min(state.uploadWindow, options.uploadWindow ?? Number.POSITIVE_INFINITY));
          if (pending.length > 0) {
            const total = pending.reduce((sum, s) => sum + s.bytes, 0);
            const reply = await timed('stream', client.upload(chunks(pending, held, total, uploadWindow), 600, uploadWindow));
            chunksSkipped += reply.chunksSkipped;
          }
        },
        {
          address: options.connect.address,
          ...(options.uploadAttempts === undefined ? {} : { attempts: options.uploadAttempts }),
          ...(options.onRetry === undefined ? {} : { onRetry: options.onRetry }),
        },
      );
    } catch (error) {
      // Solving already: what was committed is what counts.
      if (codedError(error).code !== ErrorCode.JobClosed) throw error;
    }
    const receiptsBegun = performance.now();
    // Every committed statistic's receipt comes with the coordinator's state, so receipts whose reply was
    // lost (a cut link, a crash of either side) are recovered too; each is verified before it is kept.
    const after = await client.uploadState(options.jobId);
    const committedIds = new Set(after.statistics.filter((s) => s.committed).map((s) => s.statisticId));
    const missing = uploaded.plan.statistics.filter((s) => !committedIds.has(s.id)).map((s) => s.id);
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
    const planned = new Map(uploaded.plan.statistics.map((s) => [s.id, s]));
    const lines: string[] = [];
    const records: Parameters<FileLedger['appendAll']>[0][number][] = [];
    for (const r of after.statistics.flatMap((s) => (s.receipt === undefined || known.has(s.statisticId) ? [] : [s.receipt]))) {
      const fields = receiptFields(r);
      if (
        !verifyFields({ ...fields }, r.signature, status.receiptPublicKey) ||
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
    phases.receipts = (performance.now() - receiptsBegun) / 1000;
    // Secure aggregation: the masks come off the sum only with the survivors' shares; this owner reveals its part.
    if (secure !== undefined) {
      failpoint('secure.uploaded'); // fault tests: an owner gone after its upload, before the unmasking
      await secure.reveal();
      // Once the sum is unmasked (or the job over) the keys, seed and received shares are deleted.
      await secure.settle();
    }
    return {
      owner: client.identity,
      ledger: ledger.path,
      bundle: bundleDir,
      receiptsPath,
      receipts: lines.length,
      chunksSent,
      chunksSkipped,
      uploadWindow,
      bytesSent: sent,
      reusedBundle,
      ...(upload === undefined
        ? {}
        : {
            secureAggregation: {
              maxResolution: Math.max(...[...upload.scales.values()].map((x) => x.resolution)),
              maskedEntries: upload.masking.entries,
              maskSeconds: upload.masking.seconds,
            },
          }),
      ...(publisher === undefined ? {} : { auditBacklog: await publisher.flush(10_000) }),
      seconds: { collect: collectSeconds, upload: (performance.now() - uploadStarted) / 1000, uploadPhases: phases },
      peakRssMb: process.resourceUsage().maxRSS / 1024,
      ...(memory === undefined ? {} : { memory }),
    };
  } finally {
    client.close();
    await bundleFile?.close();
    await publisher?.close();
  }
}
