import { createHash, randomBytes } from 'node:crypto';
import { access, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { z } from 'zod';

import { ErrorCode, fileError, GramfuseError } from '../errors.js';
import type { Contribution } from './contributions.js';
import { contributionFromTensors, contributionTensors, DisclosurePlan } from './plan.js';
import { parseSafetensors, writeSafetensors } from './safetensors.js';

/** manifest.json of a statistics bundle: the disclosure plan with a SHA-256 per tensor, and how it was made. */
export const BundleManifest = z
  .object({
    format: z.literal('gramfuse-statistics-bundle'),
    version: z.literal(1),
    tool: z.object({ name: z.literal('gramfuse'), version: z.string() }).strict(),
    createdAt: z.string(),
    plan: DisclosurePlan,
    settings: z
      .record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()]))
      .describe('collection settings (data file, max length, batch size, device, …)'),
  })
  .strict();
export type BundleManifest = z.infer<typeof BundleManifest>;

export const BUNDLE_TENSORS = 'statistics.safetensors';
export const BUNDLE_MANIFEST = 'manifest.json';

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const bytesOf = (a: Float32Array | Float64Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/**
 * Writes a contribution as a bundle directory (statistics.safetensors + manifest.json) atomically: into
 * a temporary directory renamed into place, so a bundle that exists is complete. Refuses to overwrite.
 */
export async function writeBundle(
  dir: string,
  plan: DisclosurePlan,
  contribution: Contribution,
  settings: BundleManifest['settings'],
  toolVersion: string,
): Promise<BundleManifest> {
  try {
    await access(dir);
    throw new GramfuseError(
      ErrorCode.FileAccess,
      `${dir}: already exists; a bundle is never overwritten (choose another --out or remove it)`,
      { facts: { path: dir } },
    );
  } catch (error) {
    if (error instanceof GramfuseError) throw error;
  }
  const tensors = contributionTensors(plan, contribution);
  const statistics = plan.statistics.map((s) => ({ ...s, sha256: sha256(bytesOf(tensors.get(s.id)!)) }));
  const manifest: BundleManifest = {
    format: 'gramfuse-statistics-bundle',
    version: 1,
    tool: { name: 'gramfuse', version: toolVersion },
    createdAt: new Date().toISOString(),
    plan: { ...plan, statistics },
    settings,
  };
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await mkdir(tmp);
    await writeSafetensors(
      join(tmp, BUNDLE_TENSORS),
      plan.statistics.map((s) => {
        const data = tensors.get(s.id)!;
        return { name: s.id, dtype: data instanceof Float32Array ? 'F32' : 'F64', shape: s.shape, data };
      }),
      { format: manifest.format, owner: plan.owner, fingerprint: plan.fingerprint },
    );
    await writeFile(join(tmp, BUNDLE_MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(tmp, dir);
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    if (error instanceof GramfuseError) throw error;
    throw fileError(error, dir, 'writing the statistics bundle');
  }
  return manifest;
}

/** Reads a bundle and verifies it completely (schema, shapes, dtypes, every SHA-256) before use. */
export async function readBundle(dir: string): Promise<{ manifest: BundleManifest; contribution: Contribution }> {
  const invalid = (reason: string, facts: Record<string, string | number> = {}): GramfuseError =>
    new GramfuseError(ErrorCode.BundleInvalid, `bundle ${dir}: ${reason}; the bundle cannot be used (ask its owner to collect it again)`, {
      facts: { bundle: dir, ...facts },
    });
  let manifestText: string;
  let file: Uint8Array;
  try {
    manifestText = await readFile(join(dir, BUNDLE_MANIFEST), 'utf8');
    file = await readFile(join(dir, BUNDLE_TENSORS));
  } catch (error) {
    throw fileError(error, dir, 'reading the statistics bundle (it needs manifest.json and statistics.safetensors)');
  }
  let json: unknown;
  try {
    json = JSON.parse(manifestText);
  } catch (error) {
    throw invalid(`manifest.json is not valid JSON (${(error as Error).message})`);
  }
  const parsed = BundleManifest.safeParse(json);
  if (!parsed.success) {
    throw invalid(
      `manifest.json does not match the bundle schema: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  }
  const manifest = parsed.data;
  const { tensors } = parseSafetensors(file, (reason) => invalid(`statistics.safetensors: ${reason}`));
  const planned = new Set(manifest.plan.statistics.map((s) => s.id));
  for (const name of tensors.keys())
    if (!planned.has(name)) throw invalid(`statistics.safetensors holds ${name}, which the manifest does not list`, { statistic: name });
  const values = new Map<string, Float64Array>();
  for (const s of manifest.plan.statistics) {
    const tensor = tensors.get(s.id);
    if (tensor === undefined)
      throw invalid(`statistic ${s.id} is listed in the manifest but missing from statistics.safetensors`, { statistic: s.id });
    const dtype = s.dtype === 'float32' ? 'F32' : 'F64';
    if (tensor.dtype !== dtype || tensor.shape.join(',') !== s.shape.join(',')) {
      throw invalid(`statistic ${s.id} is ${tensor.dtype}[${tensor.shape.join(', ')}], the manifest says ${dtype}[${s.shape.join(', ')}]`, {
        statistic: s.id,
      });
    }
    if (s.sha256 === undefined || sha256(tensor.bytes) !== s.sha256) {
      throw invalid(`statistic ${s.id} fails its SHA-256 check (the file was changed or damaged)`, { statistic: s.id });
    }
    const copy = new Uint8Array(tensor.bytes);
    const data = s.dtype === 'float32' ? Float64Array.from(new Float32Array(copy.buffer)) : new Float64Array(copy.buffer);
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i]!))
        throw invalid(`statistic ${s.id} holds a non-finite value at index ${i}`, { statistic: s.id, index: i });
    }
    values.set(s.id, data);
  }
  return { manifest, contribution: contributionFromTensors(manifest.plan, values) };
}
