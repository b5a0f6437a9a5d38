// Random bytes and mangled manifests into the coordinator's decoders (seeded, bounded): every input ends in
// a coded error (never INTERNAL), nothing crashes or hangs, and the job's state is unchanged.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { seededRandom } from '../../../agent/index.js';
import { CommitBatch, Coordinator, decodeChunk, startCoordinatorServer } from '../../../coordinator/index.js';
import { federation } from '../../../proto/index.js';
import { GramfuseError } from '../../../shared/index.js';
import { exampleBundle } from '../../helpers/agent-options.js';
import { exampleModel } from '../../helpers/examples.js';
import { recordFault } from '../../helpers/reliability.js';

const SEED = Number(process.env.GRAMFUSE_FUZZ_SEED ?? 7);
const ITERATIONS = Number(process.env.GRAMFUSE_FUZZ_ITERATIONS ?? 3000);
const work = mkdtempSync(join(tmpdir(), 'gramfuse-fuzz-'));
let coordinator: Coordinator;
let manifestJson = '';
let fingerprint = '';
afterAll(() => rmSync(work, { recursive: true, force: true }));

beforeAll(async () => {
  coordinator = await Coordinator.open(join(work, 'state'), { creators: ['creator'] });
  const view = await coordinator.createJob(
    'creator',
    { id: 'fuzz', participants: ['org0'], policy: { minRowsPerGroup: 16 } },
    readFileSync(exampleModel('org0')),
  );
  fingerprint = view.fingerprint;
  const bundle = await exampleBundle('org0', join(work, 'bundle'), { maxLength: 128 });
  manifestJson = JSON.stringify(bundle.manifest);
}, 120_000);

const allowed = new Set(['UPLOAD_INVALID', 'POLICY_VIOLATION', 'FINGERPRINT_MISMATCH', 'NOT_AUTHORIZED', 'JOB_NOT_FOUND']);

/** Runs `action`; true when it was refused with an allowed code (an uncoded or unexpected error fails the test). */
async function expectCoded(action: () => Promise<unknown>, what: string): Promise<boolean> {
  try {
    await action();
    return false;
  } catch (error) {
    expect(error, what).toBeInstanceOf(GramfuseError);
    expect(allowed.has((error as GramfuseError).code), `${what}: ${(error as GramfuseError).code}: ${(error as Error).message}`).toBe(true);
    return true;
  }
}

/** A JSON value with one random change: a key dropped, a number or string replaced, a type swapped. */
function mangle(value: unknown, random: () => number): unknown {
  if (Array.isArray(value)) {
    if (value.length === 0 || random() < 0.2) return random() < 0.5 ? [] : [null];
    const i = Math.floor(random() * value.length);
    return (value as unknown[]).map((v, j) => (j === i ? mangle(v, random) : v));
  }
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value);
    const key = keys[Math.floor(random() * keys.length)]!;
    const copy = { ...(value as Record<string, unknown>) };
    const r = random();
    if (r < 0.2) delete copy[key];
    else if (r < 0.3) copy[`x${Math.floor(random() * 100)}`] = 1;
    else copy[key] = mangle(copy[key], random);
    return copy;
  }
  const choices: unknown[] = [-1, 0, 1e308, Number.NaN, 2 ** 53 + 1, '', 'x'.repeat(300), null, true, [], {}];
  return random() < 0.5
    ? choices[Math.floor(random() * choices.length)]
    : typeof value === 'number'
      ? value * (random() * 4 - 2)
      : String(value).split('').reverse().join('');
}

describe(`decoder fuzzing (seed ${SEED}, ${ITERATIONS} inputs)`, () => {
  it('random bytes as chunk messages: decoded or refused with a code, never a crash', async () => {
    const random = seededRandom(SEED);
    const real = federation.Chunk.encode(
      federation.Chunk.fromPartial({
        jobId: 'fuzz',
        statisticId: 'count/examples',
        dtype: 'float64',
        shape: [],
        packing: 'dense',
        index: 0,
        count: 1,
        offset: 0n,
        data: new Uint8Array(8),
        sha256: '0'.repeat(64),
      }),
    ).finish();
    for (let i = 0; i < ITERATIONS; i++) {
      // Half pure noise, half a real message with bytes flipped or cut.
      let bytes: Uint8Array;
      if (i % 2 === 0) bytes = Uint8Array.from({ length: Math.floor(random() * 300) }, () => Math.floor(random() * 256));
      else {
        bytes = real.slice(0, Math.max(1, Math.floor(random() * (real.length + 1))));
        for (let k = 0; k < 3; k++) bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
      }
      const refused = await expectCoded(async () => {
        const chunk = decodeChunk(bytes);
        await coordinator.acceptChunk('org0', chunk, new CommitBatch());
      }, `chunk input ${i}`);
      // No input can be accepted: none carries the SHA-256 of its data and org0 has not joined.
      expect(refused, `chunk input ${i} was accepted`).toBe(true);
    }
    expect(coordinator.view('fuzz').state).toBe('open');
    recordFault(
      'random / corrupted chunk messages (seeded fuzz)',
      'every one refused with a code (UPLOAD_INVALID …), never INTERNAL; no crash or hang',
      ITERATIONS,
    );
  });

  it(
    'the same noise over real gRPC (Uploads/Upload, Jobs/Get): a coded INVALID_ARGUMENT status, never INTERNAL',
    { timeout: 120_000 },
    async () => {
      await using server = await startCoordinatorServer({
        stateDir: join(work, 'grpc-state'),
        listen: '127.0.0.1:0',
        insecureLoopback: true,
        creators: ['creator'],
      });
      const random = seededRandom(SEED + 2);
      const channel = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
      const metadata = new grpc.Metadata();
      metadata.set('x-gramfuse-identity', 'org0');
      const codes = new Map<string, number>();
      for (let i = 0; i < 200; i++) {
        const bytes = Buffer.from(Uint8Array.from({ length: 1 + Math.floor(random() * 200) }, () => Math.floor(random() * 256)));
        const status = await new Promise<{ code?: number; details?: string }>((resolve) => {
          if (i % 2 === 0) {
            channel.makeUnaryRequest(
              '/gramfuse.v1.Jobs/Get',
              (x: Buffer) => x,
              (b: Buffer) => b,
              bytes,
              metadata,
              (error) => resolve(error ?? { code: 0 }),
            );
            return;
          }
          const call = channel.makeBidiStreamRequest(
            '/gramfuse.v1.Uploads/Upload',
            (x: Buffer) => x,
            (b: Buffer) => b,
            metadata,
          );
          call.on('error', (error: { code?: number; details?: string }) => resolve(error));
          call.on('data', () => undefined);
          call.on('end', () => resolve({ code: 0 }));
          call.write(bytes);
          call.end();
        });
        expect(status.code, `input ${i}: ${status.details}`).not.toBe(grpc.status.INTERNAL);
        expect(status.details ?? '', `input ${i}`).toMatch(/^[A-Z_]+: /);
        const code = /^([A-Z_]+):/.exec(status.details ?? '')?.[1] ?? '?';
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
      channel.close();
      // Most noise does not even decode; what does names a job or statistic that is not there.
      for (const code of codes.keys()) expect(['INVALID_ARGUMENT', 'UPLOAD_INVALID', 'JOB_NOT_FOUND', 'NOT_AUTHORIZED']).toContain(code);
      expect(codes.get('INVALID_ARGUMENT') ?? 0).toBeGreaterThan(0);
    },
  );

  it('mangled and random manifests: refused with a code, the job unchanged', async () => {
    const random = seededRandom(SEED + 1);
    const parsed = JSON.parse(manifestJson) as unknown;
    let accepted = 0;
    for (let i = 0; i < Math.min(ITERATIONS, 1500); i++) {
      const text =
        i % 3 === 0
          ? String.fromCharCode(...Array.from({ length: Math.floor(random() * 200) }, () => Math.floor(random() * 128)))
          : JSON.stringify(mangle(mangle(parsed, random), random));
      // A change that leaves the manifest valid (e.g. a number within range) may be accepted.
      if (!(await expectCoded(() => coordinator.join('org0', 'fuzz', fingerprint, text), `manifest input ${i}`))) accepted++;
    }
    // Whatever was accepted, the job is still collecting nothing committed, and a real manifest still joins.
    expect(['open', 'collecting']).toContain(coordinator.view('fuzz').state);
    await coordinator.join('org0', 'fuzz', fingerprint, manifestJson);
    // Pure noise (every third input) can never be a manifest: at least those are refused.
    expect(accepted).toBeLessThanOrEqual(Math.min(ITERATIONS, 1500) - Math.ceil(Math.min(ITERATIONS, 1500) / 3));
    recordFault(
      'random / mangled manifests (seeded fuzz)',
      'refused with a code or (a harmless change) accepted; job unchanged; a real manifest still joins',
      Math.min(ITERATIONS, 1500),
    );
  });
});
