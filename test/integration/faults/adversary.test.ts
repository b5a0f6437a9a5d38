import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runAgent, seededRandom } from '../../../agent/index.js';
import { connectFederation } from '../../../client/index.js';
import { federation } from '../../../proto/index.js';
import { ErrorCode, errorFromGrpc, type GramfuseError } from '../../../shared/index.js';
import { type BundleManifest } from '../../../shared/merge/index.js';
import { exampleAgent, exampleBundle } from '../../helpers/agent-options.js';
import { CoordinatorProcess } from '../../helpers/coordinator-process.js';
import { exampleModel } from '../../helpers/examples.js';
import { freePort } from '../../helpers/nats-server.js';

/**
 * A malicious participant (issue #14, item 8), driven through a real gRPC client against a real coordinator
 * process: it ignores acknowledgements, sends offsets near 2^53, declares a 10^12-byte statistic, floods chunks
 * of a statistic it never finishes, and re-joins to reset its budget. The coordinator's peak RSS stays under a
 * stated bound, its disk under the job's budget, and another job finishes. Seeded: GRAMFUSE_ADVERSARY_SEED.
 */
const SEED = Number(process.env.GRAMFUSE_ADVERSARY_SEED ?? 20261201);
/** The bound: what the coordinator needs for one small job and its solve, plus a few chunks in flight. */
const RSS_BOUND_MB = 600;
/** The attacked job's byte budget: one owner's statistics (≈ 14 MB here) fit, two do not. */
const BUDGET = 20 * 1024 ** 2;
const FLOOD_CHUNKS = 400; // × 256 KiB = 100 MiB sent without waiting for a single ack
const FLOOD_MB = (FLOOD_CHUNKS * 256) / 1024;
const work = mkdtempSync(join(tmpdir(), 'gramfuse-adversary-'));
let coordinator: CoordinatorProcess;
let manifest: BundleManifest;

const peakRssMb = (pid: number): number => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
const duBytes = (dir: string): number =>
  readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .reduce((sum, e) => sum + statSync(join(e.parentPath, e.name)).size, 0);

beforeAll(async () => {
  coordinator = new CoordinatorProcess(await freePort(), join(work, 'state'));
  await coordinator.start();
  const creator = connectFederation({ address: coordinator.address, insecureIdentity: 'creator' });
  const template = readFileSync(exampleModel('org0'));
  await creator.createJob(
    JSON.stringify({
      id: 'attacked',
      participants: ['mallory', 'org1'],
      policy: { minRowsPerGroup: 16 },
      limits: { maxJobBytes: BUDGET },
    }),
    template,
  );
  await creator.createJob(JSON.stringify({ id: 'honest', participants: ['org0'], policy: { minRowsPerGroup: 16 } }), template);
  creator.close();
  ({ manifest } = await exampleBundle('mallory', join(work, 'bundle')));
}, 120_000);
afterAll(async () => {
  await coordinator?.kill('SIGTERM');
  rmSync(work, { recursive: true, force: true });
});

const join_ = (who: string, m: unknown): Promise<unknown> => {
  const client = connectFederation({ address: coordinator.address, insecureIdentity: who, deadlineSeconds: 10 });
  return client
    .join({ jobId: 'attacked', fingerprint: manifest.plan.fingerprint, manifestJson: JSON.stringify(m) })
    .finally(() => client.close());
};

describe('a malicious participant cannot hurt the coordinator', () => {
  it('a 10^12-byte statistic, and byte counts that disagree with shape × dtype, are refused at join', async () => {
    const huge = structuredClone(manifest);
    huge.plan.statistics[0]!.bytes = 1e12;
    const error = (await join_('mallory', huge).catch((e: unknown) => e)) as GramfuseError;
    expect(error.code).toBe(ErrorCode.UploadInvalid);
    expect(error.message).toMatch(/declares 1000000000000 bytes of float64, but its shape \[\d+\] holds \d+/);
  });

  it('the byte budget holds across re-joins: a second owner is refused once the first one declared most of it', async () => {
    // mallory's honest-looking manifest fits the budget …
    const total = manifest.plan.statistics.reduce((s, x) => s + x.bytes, 0);
    expect(total).toBeLessThan(BUDGET);
    expect(2 * total).toBeGreaterThan(BUDGET);
    await join_('mallory', manifest);
    await join_('mallory', manifest); // idempotent re-join: still one owner's worth
    // … and org1's would pass it: refused with RESOURCE_EXHAUSTED, whatever mallory re-joins.
    const org1 = structuredClone(manifest);
    org1.plan.owner = 'org1';
    const error = (await join_('org1', org1).catch((e: unknown) => e)) as GramfuseError;
    expect(error.code).toBe(ErrorCode.ResourceExhausted);
    expect(error.message).toMatch(new RegExp(`past its budget of ${BUDGET} \\(limits\\.maxJobBytes\\)`));
  });

  it(
    'offsets near 2^53, flooding without acks, and a statistic never finished: RSS and disk stay bounded, the honest job finishes',
    { timeout: 300_000 },
    async () => {
      await join_('mallory', manifest); // idempotent: the test stands on its own
      const random = seededRandom(SEED);
      const gram = manifest.plan.statistics.filter((s) => s.kind === 'gram').sort((a, b) => b.bytes - a.bytes)[0]!;
      const client = new federation.UploadsClient(coordinator.address, grpc.credentials.createInsecure());
      const metadata = new grpc.Metadata();
      metadata.set('x-gramfuse-identity', 'mallory');
      const chunkOf = (offset: bigint, bytes: number, index: number, count: number): federation.Chunk => {
        const data = new Uint8Array(bytes).map(() => Math.floor(random() * 256));
        return federation.Chunk.fromPartial({
          jobId: 'attacked',
          statisticId: gram.id,
          dtype: gram.dtype,
          shape: gram.shape.map(BigInt),
          packing: gram.packing,
          index,
          count,
          offset,
          data,
          sha256: createHash('sha256').update(data).digest('hex'),
        });
      };
      const stream = async (chunks: () => Generator<federation.Chunk>): Promise<{ code: string; acks: number }> =>
        new Promise((resolve) => {
          const call = client.upload(metadata, { deadline: new Date(Date.now() + 120_000) });
          let acks = 0;
          call.on('data', () => acks++);
          call.on('error', (e: grpc.ServiceError) => resolve({ code: errorFromGrpc(e).code, acks }));
          call.on('end', () => resolve({ code: 'OK', acks }));
          // Ignores every acknowledgement and honours no flow control: writes as fast as it can.
          for (const c of chunks()) call.write(c);
          call.end();
        });
      // Offsets near 2^53 (and past it), one chunk each: refused, coded.
      for (const offset of [2n ** 53n - 1n, 2n ** 53n, 2n ** 62n, BigInt(gram.bytes)]) {
        const r = await stream(function* () {
          yield chunkOf(offset, 16, 1, 2);
        });
        expect(r.code, `offset ${offset}`).toBe(ErrorCode.UploadInvalid);
      }
      const before = peakRssMb(coordinator.pid!);
      // Flood: chunk 0 (of 2: never finished) of the largest Gram, again and again, with no ack awaited.
      const size = Math.min(256 * 1024, Math.floor(gram.bytes / 2));
      const flood = await stream(function* () {
        for (let i = 0; i < FLOOD_CHUNKS; i++) yield chunkOf(0n, size, 0, 2);
      });
      const afterFlood = peakRssMb(coordinator.pid!);
      // 100 MiB pushed at it without a single ack awaited: backpressure keeps what the coordinator holds at a
      // few chunks (measured: +16 MB); without it the whole flood would sit in its memory.
      expect(afterFlood - before, `coordinator peak RSS ${before.toFixed(0)} → ${afterFlood.toFixed(0)} MB`).toBeLessThan(FLOOD_MB / 2);
      // Paused by backpressure, then cancelled, or served slowly to the end: never an INTERNAL, never unbounded.
      expect(['OK', ErrorCode.ResourceExhausted, ErrorCode.UploadInvalid]).toContain(flood.code);
      client.close();
      // The honest job next door still runs to the end.
      await runAgent(
        exampleAgent('org0', { address: coordinator.address, insecureIdentity: 'org0' }, 'honest', join(work, 'org0'), { maxLength: 64 }),
      );
      const watcher = connectFederation({ address: coordinator.address, insecureIdentity: 'creator' });
      const final = await watcher.watch('honest', () => undefined);
      watcher.close();
      expect(final.state).toBe('done');
      const pid = coordinator.pid!;
      const rss = peakRssMb(pid);
      expect(rss, `coordinator peak RSS ${rss.toFixed(0)} MB`).toBeLessThan(RSS_BOUND_MB);
      const attacked = duBytes(join(work, 'state', 'jobs', 'attacked', 'owners'));
      expect(attacked).toBeLessThanOrEqual(BUDGET);
    },
  );
});
