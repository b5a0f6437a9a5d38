import { randomBytes } from 'node:crypto';
import { link, lstat, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename } from 'node:path';

import { ModelProto } from '../proto/index.js';
import { ensureDirectoryFor, ErrorCode, fileError, GramfuseError } from '../shared/index.js';
import type { FederationClient } from './connect.js';

/** The metadata key saveModel records the side file's SHA-256 under (shared/onnx/model-io.ts). */
const EXTERNAL_DATA_SHA256_KEY = 'gramfuse.external_data_sha256';

export interface DownloadedModel {
  /** SHA-256 and size of the model as received (checked against the job's result digest). */
  readonly sha256: string;
  readonly bytes: number;
  /**
   * The side file of a model past 2 GB: always `<path>.data`, whatever name the coordinator's model gives it.
   * `renamedFrom` is the name the model gave (its tensors now point at `<path>.data`) when the two differ.
   */
  readonly dataFile?: { readonly path: string; readonly sha256: string; readonly bytes: number; readonly renamedFrom?: string };
}

/**
 * A job's merged model into `path`, with its external-data file when it has one (merged models past protobuf's
 * 2 GB): the model is checked against `expectedSha256` (the job's result digest), the side file against the digest
 * that model records, each written beside its target first; the model is renamed into place last, so a failure never
 * leaves a model that looks complete without its data.
 *
 * The side file is always `<path>.data`: the coordinator never names a file this writes (a model whose tensors say
 * `.bashrc` or `../x` gets its locations rewritten to `<path>.data`'s name), and an existing `<path>.data` is never
 * replaced (FILE_EXISTS: remove it or choose another path).
 */
export async function downloadMergedModel(
  client: FederationClient,
  jobId: string,
  path: string,
  expectedSha256: string,
): Promise<DownloadedModel> {
  const suffix = `.download-${randomBytes(4).toString('hex')}`;
  const staged = `${path}${suffix}`;
  const dataPath = `${path}.data`;
  const stagedData = `${dataPath}${suffix}`;
  await ensureDirectoryFor(path);
  try {
    const model = await client.downloadTo(jobId, 'merged.onnx', staged, expectedSha256);
    const proto = ModelProto.decode(await readFile(staged));
    const side = sideFile(proto, jobId);
    let dataFile: DownloadedModel['dataFile'];
    if (side !== undefined) {
      await refuseExisting(dataPath);
      const data = await client.downloadTo(jobId, 'merged.onnx.data', stagedData, side.sha256);
      const name = basename(dataPath);
      if (side.location !== name) {
        for (const tensor of proto.graph?.initializer ?? [])
          if (tensor.dataLocation === 1)
            tensor.externalData = tensor.externalData.map((e) => (e.key === 'location' ? { ...e, value: name } : e));
        await writeFile(staged, ModelProto.encode(proto).finish()).catch((error: unknown) => {
          throw fileError(error, path, 'writing the downloaded model');
        });
      }
      // A hard link fails when the name exists (unlike a rename): a file that appeared meanwhile is not replaced either.
      await link(stagedData, dataPath).catch((error: unknown) => {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw existsError(dataPath);
        throw fileError(error, dataPath, 'placing the downloaded external data');
      });
      dataFile = { path: dataPath, ...data, ...(side.location === name ? {} : { renamedFrom: side.location }) };
    }
    await rename(staged, path).catch((error: unknown) => {
      throw fileError(error, path, 'placing the downloaded model');
    });
    return { ...model, ...(dataFile === undefined ? {} : { dataFile }) };
  } finally {
    await rm(staged, { force: true });
    await rm(stagedData, { force: true });
  }
}

const existsError = (path: string): GramfuseError =>
  new GramfuseError(
    ErrorCode.FileExists,
    `${path}: already exists; a download never replaces a file: remove it or choose another --out (the model's external data goes to <out>.data)`,
    { facts: { path } },
  );

async function refuseExisting(path: string): Promise<void> {
  const found = await lstat(path).then(
    () => true,
    (error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw fileError(error, path, 'checking the external data path');
    },
  );
  if (found) throw existsError(path);
}

/** The one side file a merged model's tensors live in (the name it gives, only for the report), and its recorded SHA-256. */
function sideFile(proto: ModelProto, jobId: string): { location: string; sha256: string } | undefined {
  const locations = new Set<string>();
  for (const tensor of proto.graph?.initializer ?? [])
    if (tensor.dataLocation === 1) locations.add(tensor.externalData.find((e) => e.key === 'location')?.value ?? '');
  if (locations.size === 0) return undefined;
  const [location] = [...locations];
  const sha256 = proto.metadataProps.find((p) => p.key === EXTERNAL_DATA_SHA256_KEY)?.value;
  if (locations.size > 1 || location === undefined)
    throw new GramfuseError(
      ErrorCode.UploadInvalid,
      `job ${jobId}: the merged model names ${locations.size} external data files; a merged model has one`,
      { facts: { job: jobId } },
    );
  if (sha256 === undefined || !/^[0-9a-f]{64}$/.test(sha256))
    throw new GramfuseError(ErrorCode.UploadInvalid, `job ${jobId}: the merged model records no SHA-256 for its external data`, {
      facts: { job: jobId },
    });
  return { location, sha256 };
}
