import { randomBytes } from 'node:crypto';
import { readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

import { ModelProto } from '../proto/index.js';
import { ensureDirectoryFor, ErrorCode, fileError, GramfuseError } from '../shared/index.js';
import type { FederationClient } from './connect.js';

/** The metadata key saveModel records the side file's SHA-256 under (shared/onnx/model-io.ts). */
const EXTERNAL_DATA_SHA256_KEY = 'gramfuse.external_data_sha256';

export interface DownloadedModel {
  readonly sha256: string;
  readonly bytes: number;
  /** The side file of a model past 2 GB, beside the model under the name the model gives it. */
  readonly dataFile?: { readonly path: string; readonly sha256: string; readonly bytes: number };
}

/**
 * A job's merged model into `path`, with its external-data file when it has one (merged models past protobuf's
 * 2 GB): the model is checked against `expectedSha256` (the job's result digest), the side file against the digest
 * that model records, each written atomically; the model is renamed into place last, so a failure never leaves
 * a model that looks complete without its data.
 */
export async function downloadMergedModel(
  client: FederationClient,
  jobId: string,
  path: string,
  expectedSha256: string,
): Promise<DownloadedModel> {
  const staged = `${path}.download-${randomBytes(4).toString('hex')}`;
  await ensureDirectoryFor(path);
  try {
    const model = await client.downloadTo(jobId, 'merged.onnx', staged, expectedSha256);
    const side = sideFile(ModelProto.decode(await readFile(staged)), jobId);
    let dataFile: DownloadedModel['dataFile'];
    if (side !== undefined) {
      const dataPath = join(dirname(path), side.location);
      const data = await client.downloadTo(jobId, 'merged.onnx.data', dataPath, side.sha256);
      dataFile = { path: dataPath, ...data };
    }
    await rename(staged, path).catch((error: unknown) => {
      throw fileError(error, path, 'placing the downloaded model');
    });
    return { ...model, ...(dataFile === undefined ? {} : { dataFile }) };
  } finally {
    await rm(staged, { force: true });
  }
}

/** The one side file a merged model's tensors live in, and the SHA-256 it records for it. */
function sideFile(proto: ModelProto, jobId: string): { location: string; sha256: string } | undefined {
  const locations = new Set<string>();
  for (const tensor of proto.graph?.initializer ?? [])
    if (tensor.dataLocation === 1) locations.add(tensor.externalData.find((e) => e.key === 'location')?.value ?? '');
  if (locations.size === 0) return undefined;
  const [location] = [...locations];
  const sha256 = proto.metadataProps.find((p) => p.key === EXTERNAL_DATA_SHA256_KEY)?.value;
  // The coordinator names the file: only a plain file name beside the model, never a path elsewhere.
  if (
    locations.size > 1 ||
    location === undefined ||
    location !== basename(location) ||
    location === '..' ||
    location === '.' ||
    location === ''
  )
    throw new GramfuseError(
      ErrorCode.UploadInvalid,
      `job ${jobId}: the merged model names external data ${[...locations].join(', ')}; expected one file beside it`,
      {
        facts: { job: jobId },
      },
    );
  if (sha256 === undefined || !/^[0-9a-f]{64}$/.test(sha256))
    throw new GramfuseError(
      ErrorCode.UploadInvalid,
      `job ${jobId}: the merged model records no SHA-256 for its external data ${location}`,
      {
        facts: { job: jobId },
      },
    );
  return { location, sha256 };
}
