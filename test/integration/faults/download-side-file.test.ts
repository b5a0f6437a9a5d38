// Issue 37 item 9: a coordinator names the file a download writes. A purpose-built malicious coordinator (a real gRPC
// server on loopback, serving the Jobs and Results calls `job download` makes) hands out a genuine merged model with
// external data whose tensors name their side file `.bashrc`, `../x` or an absolute path, each with a result digest
// that verifies. The client must write the side file as `<out>.data` only, replace nothing that exists, and leave a
// model that loads with every tensor intact.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { federation, ModelProto } from '../../../proto/index.js';
import { exitCodeByErrorCode } from '../../../shared/index.js';
import { loadModel, saveModel, tensorBytes } from '../../../shared/onnx/index.js';
import { runCli } from '../../helpers/cli.js';
import { exampleModel } from '../../helpers/examples.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-side-file-'));
let server: grpc.Server;
let address = '';
/** What the malicious coordinator serves now: the model's bytes and its side file's. */
let served: { model: Buffer; data: Buffer } = { model: Buffer.alloc(0), data: Buffer.alloc(0) };
let base: ModelProto;
let data: Buffer;
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** The genuine merged model with every external tensor pointing at `location` (its recorded side file digest still true). */
function modelNaming(location: string): Buffer {
  const proto = ModelProto.decode(ModelProto.encode(base).finish());
  for (const t of proto.graph!.initializer)
    if (t.dataLocation === 1) t.externalData = t.externalData.map((e) => (e.key === 'location' ? { ...e, value: location } : e));
  return Buffer.from(ModelProto.encode(proto).finish());
}

beforeAll(async () => {
  const dir = join(work, 'coordinator');
  mkdirSync(dir);
  await saveModel(await loadModel(exampleModel('org0')), join(dir, 'merged.onnx'), { externalData: 'always' });
  base = ModelProto.decode(readFileSync(join(dir, 'merged.onnx')));
  data = readFileSync(join(dir, 'merged.onnx.data'));
  server = new grpc.Server();
  server.addService(federation.JobsService, {
    get: (_call: unknown, done: grpc.sendUnaryData<federation.JobStatus>) =>
      done(null, federation.JobStatus.fromPartial({ jobId: 'attacked', state: 'done', resultSha256: sha256(served.model) })),
  });
  server.addService(federation.ResultsService, {
    download: (call: grpc.ServerWritableStream<federation.DownloadRequest, federation.DownloadChunk>) => {
      const bytes = call.request.artifact === 'merged.onnx' ? served.model : served.data;
      for (let at = 0; at < bytes.byteLength; at += 2 ** 20)
        call.write({
          offset: BigInt(at),
          data: bytes.subarray(at, at + 2 ** 20),
          totalBytes: BigInt(bytes.byteLength),
          sha256: sha256(bytes),
        });
      call.end();
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e === null ? resolve(p) : reject(e))),
  );
  address = `127.0.0.1:${port}`;
}, 60_000);
afterAll(async () => {
  await new Promise<void>((resolve) => server?.tryShutdown(() => resolve()));
  rmSync(work, { recursive: true, force: true });
});

const download = (out: string) =>
  runCli(['job', 'download', 'attacked', '--coordinator', address, '--insecure-loopback', '--identity', 'creator', '--out', out]);
const listing = (dir: string): Record<string, string> =>
  Object.fromEntries(
    readdirSync(dir, { withFileTypes: true, recursive: true })
      .filter((e) => e.isFile())
      .map((e) => [join(e.parentPath, e.name).slice(dir.length), sha256(readFileSync(join(e.parentPath, e.name)))]),
  );

describe('the side file of a downloaded model is named by the client, never by the coordinator', () => {
  for (const location of ['.bashrc', '../x', '/tmp/gramfuse-side-file-attack']) {
    it(`a model naming its side file ${location}: written as <out>.data, nothing else touched`, { timeout: 60_000 }, async () => {
      const root = mkdtempSync(join(work, 'client-'));
      const home = join(root, 'home');
      mkdirSync(home);
      // What the attack would overwrite: the user's files beside --out and above it.
      writeFileSync(join(home, '.bashrc'), 'alias ls="ls -F"\n');
      writeFileSync(join(root, 'x'), "the user's own x\n");
      const before = listing(root);
      served = { model: modelNaming(location), data };
      const out = join(home, 'merged.onnx');
      const result = await download(out);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toContain(`the model named it ${JSON.stringify(location)}`);
      const after = listing(root);
      // Exactly two new files, both where --out says; every file that was there is unchanged.
      expect(Object.keys(after).sort()).toEqual([...Object.keys(before), '/home/merged.onnx', '/home/merged.onnx.data'].sort());
      for (const [file, digest] of Object.entries(before)) expect(after[file], file).toBe(digest);
      expect(after['/home/merged.onnx.data']).toBe(sha256(data));
      expect(readdirSync('/tmp')).not.toContain('gramfuse-side-file-attack');
      // The model loads from <out>.data: every tensor equals the genuine model's.
      const [genuine, downloaded] = [await loadModel(exampleModel('org0')), await loadModel(out)];
      const external = downloaded.proto.graph!.initializer.filter((t) => t.dataLocation === 1);
      expect(external.length).toBeGreaterThan(0);
      for (const t of external) expect(t.externalData.find((e) => e.key === 'location')?.value).toBe('merged.onnx.data');
      for (const t of genuine.proto.graph!.initializer) {
        const mine = downloaded.proto.graph!.initializer.find((d) => d.name === t.name)!;
        expect(sha256(tensorBytes(downloaded, mine)), t.name).toBe(sha256(tensorBytes(genuine, t)));
      }
    });
  }

  it('an existing <out>.data is never replaced: FILE_EXISTS, and no model is placed', { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(join(work, 'existing-'));
    writeFileSync(join(dir, 'merged.onnx.data'), 'an unrelated file the user keeps\n');
    const before = listing(dir);
    served = { model: modelNaming('merged.onnx.data'), data };
    const result = await download(join(dir, 'merged.onnx'));
    expect(result.code).toBe(exitCodeByErrorCode.FILE_EXISTS);
    expect(result.stderr).toMatch(/FILE_EXISTS: .*merged\.onnx\.data: already exists; a download never replaces a file/);
    expect(listing(dir)).toEqual(before);
  });
});
