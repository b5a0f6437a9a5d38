// The coordinator's disk fills up: an upload gets STORAGE_FULL and changes nothing; a solve that cannot
// write its result marks the job failed with STORAGE_FULL and leaves no partial result; restarted with
// space, the coordinator finishes the job. Runs on a small tmpfs (needs root, as on CI's machine).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { runAgent } from '../../../agent/index.js';
import { connectFederation } from '../../../client/index.js';
import { ErrorCode, type GramfuseError } from '../../../shared/index.js';
import { verifyLedger } from '../../../shared/audit/index.js';
import { loadModel } from '../../../shared/onnx/index.js';
import { CoordinatorProcess } from '../../helpers/coordinator-process.js';
import { exampleAgent } from '../../helpers/agent-options.js';
import { exampleModel } from '../../helpers/examples.js';
import { freePort } from '../../helpers/nats-server.js';
import { recordFault } from '../../helpers/reliability.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-disk-full-'));
const mountPoint = join(work, 'small-disk');
mkdirSync(mountPoint);
let mounted = false;
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=96m', 'tmpfs', mountPoint], { stdio: 'ignore' });
  mounted = true;
} catch {
  process.stderr.write('disk-full test: cannot mount a tmpfs here (needs root); skipped\n');
}
afterAll(() => {
  if (mounted) execFileSync('umount', [mountPoint]);
  rmSync(work, { recursive: true, force: true });
});

const freeBytes = (): number => {
  const s = statfsSync(mountPoint);
  return s.bavail * s.bsize;
};
/** Leaves `bytes` free on the small disk (a filler file takes the rest). */
function leaveFree(bytes: number): void {
  rmSync(join(mountPoint, 'filler'), { force: true });
  const fill = freeBytes() - bytes;
  if (fill > 0) writeFileSync(join(mountPoint, 'filler'), Buffer.alloc(fill));
}

const agent = (org: string, address: string): Parameters<typeof runAgent>[0] =>
  exampleAgent(org, { address, insecureIdentity: org }, 'full', join(work, 'agents', org));

describe('disk full on the coordinator', () => {
  it.skipIf(!mounted)(
    'STORAGE_FULL for an upload and for the solve; nothing corrupt; a restart with space finishes the job',
    { timeout: 240_000 },
    async () => {
      const step = (what: string): boolean =>
        process.stderr.write(`disk-full: ${what} (${(freeBytes() / 1024 ** 2).toFixed(1)} MB free)\n`);
      const coordinator = new CoordinatorProcess(await freePort(), join(mountPoint, 'state'));
      await coordinator.start();
      try {
        const client = connectFederation({ address: coordinator.address, insecureIdentity: 'creator' });
        await client.createJob(
          JSON.stringify({ id: 'full', participants: ['org0', 'org1'], policy: { minRowsPerGroup: 16 } }),
          readFileSync(exampleModel('org0')),
        );
        step('job created');
        await runAgent(agent('org0', coordinator.address));
        step('org0 uploaded');
        const oneUpload = 96 * 1024 ** 2 - freeBytes(); // roughly what org0's statistics, receipts and records took, plus the template

        // 1. Not enough space for org1's statistics: a coded error; the job is untouched and still collecting.
        leaveFree(2 * 1024 ** 2);
        const error = await runAgent(agent('org1', coordinator.address)).catch((e: unknown) => e as GramfuseError);
        expect((error as GramfuseError).code).toBe(ErrorCode.StorageFull);
        expect((error as GramfuseError).message).toMatch(/the disk is full .*free space and retry/);
        expect((await client.getJob('full')).state).toBe('collecting');
        recordFault(
          'coordinator disk full during an upload (tmpfs)',
          'STORAGE_FULL to the agent; job still collecting; what had verified is kept for the retry, nothing torn',
        );

        // 2. Space for the upload but not for the result: the solve fails with STORAGE_FULL, leaving no partial result.
        step('org1 refused');
        leaveFree(oneUpload - 4 * 1024 ** 2);
        step('space for one upload');
        await runAgent(agent('org1', coordinator.address));
        step('org1 uploaded');
        const failed = await client.watch('full', () => undefined);
        expect(failed.state).toBe('failed');
        expect(failed.failureCode).toBe(ErrorCode.StorageFull);
        const result = join(mountPoint, 'state', 'jobs', 'full', 'result');
        const left = (() => {
          try {
            return readdirSync(result);
          } catch {
            return [];
          }
        })();
        expect(left.filter((f) => f.includes('.tmp-') || f === 'merged.onnx')).toEqual([]);
        client.close();

        // 3. Space again, restart: the coordinator reloads cleanly and finishes the job.
        rmSync(join(mountPoint, 'filler'), { force: true });
        await coordinator.kill('SIGTERM');
        await coordinator.start();
        const again = connectFederation({ address: coordinator.address, insecureIdentity: 'creator' });
        const done = await again.watch('full', () => undefined);
        expect(done.state, `${done.failureCode}: ${done.failureMessage}\n${coordinator.log}`).toBe('done');
        const merged = await again.download('full', 'merged.onnx');
        again.close();
        writeFileSync(join(work, 'merged.onnx'), merged);
        expect((await loadModel(join(work, 'merged.onnx'))).proto.graph!.initializer.length).toBeGreaterThan(10);
        await verifyLedger(join(mountPoint, 'state', 'audit.jsonl'));
        recordFault(
          'coordinator disk full during the solve (tmpfs)',
          'job failed with STORAGE_FULL, no partial result; restarted with space, the job finished; ledger verifies',
        );
      } finally {
        await coordinator.kill('SIGTERM');
      }
    },
  );
});
