import { createHash, randomBytes } from 'node:crypto';
import { access, mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { z } from 'zod';

import { ErrorCode, fileError, GramfuseError, schemaProblems } from '../errors.js';
import { DisclosurePlan } from './plan.js';
import { readSafetensorsHeader } from './safetensors.js';

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

/**
 * What an owner sends at join, and all the coordinator keeps of it (`owners/<id>/manifest.json`): exactly the approved
 * disclosure plan. A bundle's `settings` (model, data and tokenizer paths, memory, timings), its tool version and its
 * creation time stay with the owner: only what the plan lists leaves (DESIGN §8).
 */
export const JoinManifest = z.object({ plan: DisclosurePlan }).strict();
export type JoinManifest = z.infer<typeof JoinManifest>;

/** The join message of a bundle: its plan, and nothing else of it. */
export function joinManifest(manifest: BundleManifest): JoinManifest {
  return { plan: manifest.plan };
}

export const BUNDLE_TENSORS = 'statistics.safetensors';
export const BUNDLE_MANIFEST = 'manifest.json';

/** A bundle being written: its statistics go to `statisticsPath` inside a temporary directory beside `dir`. */
export interface BundleInProgress {
  readonly dir: string;
  readonly tmp: string;
  readonly statisticsPath: string;
}

/**
 * Starts a bundle directory (statistics.safetensors + manifest.json), written atomically: everything goes into a
 * temporary directory that `finishBundle` renames into place, so a bundle that exists is complete. Refuses to
 * overwrite.
 */
export async function startBundle(dir: string): Promise<BundleInProgress> {
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
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await mkdir(tmp, { recursive: true });
  } catch (error) {
    throw fileError(error, dir, 'creating the statistics bundle');
  }
  return { dir, tmp, statisticsPath: join(tmp, BUNDLE_TENSORS) };
}

/** Writes the manifest (the plan with each statistic's SHA-256) and moves the bundle into place. */
export async function finishBundle(
  bundle: BundleInProgress,
  plan: DisclosurePlan,
  sha256: Readonly<Record<string, string>>,
  settings: BundleManifest['settings'],
  toolVersion: string,
): Promise<BundleManifest> {
  const statistics = plan.statistics.map((s) => {
    const digest = sha256[s.id];
    if (digest === undefined) throw new GramfuseError(ErrorCode.Internal, `statistic ${s.id} was not written to the bundle`);
    return { ...s, sha256: digest };
  });
  const manifest: BundleManifest = {
    format: 'gramfuse-statistics-bundle',
    version: 1,
    tool: { name: 'gramfuse', version: toolVersion },
    createdAt: new Date().toISOString(),
    plan: { ...plan, statistics },
    settings,
  };
  try {
    await writeFile(join(bundle.tmp, BUNDLE_MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(bundle.tmp, bundle.dir);
  } catch (error) {
    await abandonBundle(bundle);
    throw fileError(error, bundle.dir, 'writing the statistics bundle');
  }
  return manifest;
}

/** Removes a bundle that will not be finished (a failed collection, a policy refusal). */
export async function abandonBundle(bundle: BundleInProgress): Promise<void> {
  await rm(bundle.tmp, { recursive: true, force: true });
}

/** A verified bundle: its manifest, and where each statistic's bytes lie in statistics.safetensors. */
export interface VerifiedBundle {
  readonly manifest: BundleManifest;
  readonly statisticsPath: string;
  /** Statistic id → byte range [begin, end) in statistics.safetensors. */
  readonly ranges: ReadonlyMap<string, { readonly begin: number; readonly end: number }>;
}

const VERIFY_SLICE = 8 * 2 ** 20;

/**
 * Verifies a bundle completely (schema, shapes, dtypes, every SHA-256, every value finite) while reading its
 * statistics a slice at a time: memory holds 8 MiB of it, whatever the bundle's size (bundles past 2 GiB too).
 */
export async function verifyBundle(dir: string): Promise<VerifiedBundle> {
  const invalid = (reason: string, facts: Record<string, string | number> = {}): GramfuseError =>
    new GramfuseError(ErrorCode.BundleInvalid, `bundle ${dir}: ${reason}; the bundle cannot be used (ask its owner to collect it again)`, {
      facts: { bundle: dir, ...facts },
    });
  const manifest = await readManifest(dir, invalid);
  const statisticsPath = join(dir, BUNDLE_TENSORS);
  const { entries } = await readSafetensorsHeader(statisticsPath, (reason) => invalid(`statistics.safetensors: ${reason}`));
  const planned = new Set(manifest.plan.statistics.map((s) => s.id));
  for (const name of entries.keys())
    if (!planned.has(name)) throw invalid(`statistics.safetensors holds ${name}, which the manifest does not list`, { statistic: name });
  const ranges = new Map<string, { begin: number; end: number }>();
  let handle;
  try {
    handle = await open(statisticsPath, 'r');
  } catch (error) {
    throw fileError(error, dir, 'reading the statistics bundle');
  }
  try {
    const buffer = Buffer.alloc(VERIFY_SLICE);
    for (const s of manifest.plan.statistics) {
      const entry = entries.get(s.id);
      if (entry === undefined)
        throw invalid(`statistic ${s.id} is listed in the manifest but missing from statistics.safetensors`, { statistic: s.id });
      const dtype = s.dtype === 'float32' ? 'F32' : 'F64';
      if (entry.dtype !== dtype || entry.shape.join(',') !== s.shape.join(',')) {
        throw invalid(`statistic ${s.id} is ${entry.dtype}[${entry.shape.join(', ')}], the manifest says ${dtype}[${s.shape.join(', ')}]`, {
          statistic: s.id,
        });
      }
      const width = s.dtype === 'float32' ? 4 : 8;
      const hash = createHash('sha256');
      for (let at = entry.begin; at < entry.end; at += VERIFY_SLICE) {
        const length = Math.min(VERIFY_SLICE, entry.end - at);
        const { bytesRead } = await handle.read(buffer, 0, length, at);
        if (bytesRead !== length) throw invalid(`statistics.safetensors ends inside statistic ${s.id}`, { statistic: s.id });
        const slice = buffer.subarray(0, length);
        hash.update(slice);
        const values =
          width === 4
            ? new Float32Array(slice.buffer, slice.byteOffset, length / 4)
            : new Float64Array(slice.buffer, slice.byteOffset, length / 8);
        for (let i = 0; i < values.length; i++)
          if (!Number.isFinite(values[i]!))
            throw invalid(`statistic ${s.id} holds a non-finite value at index ${(at - entry.begin) / width + i}`, {
              statistic: s.id,
              index: (at - entry.begin) / width + i,
            });
      }
      if (s.sha256 === undefined || hash.digest('hex') !== s.sha256)
        throw invalid(`statistic ${s.id} fails its SHA-256 check (the file was changed or damaged)`, { statistic: s.id });
      ranges.set(s.id, { begin: entry.begin, end: entry.end });
    }
  } finally {
    await handle.close();
  }
  return { manifest, statisticsPath, ranges };
}

async function readManifest(dir: string, invalid: (reason: string) => GramfuseError): Promise<BundleManifest> {
  let manifestText: string;
  try {
    manifestText = await readFile(join(dir, BUNDLE_MANIFEST), 'utf8');
  } catch (error) {
    // The directory is there but holds no manifest: not a bundle (a missing directory stays FILE_NOT_FOUND).
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' && (await stat(dir).catch(() => undefined))?.isDirectory() === true)
      throw invalid(
        `no ${BUNDLE_MANIFEST}: not a statistics bundle (it holds manifest.json and statistics.safetensors, from \`gramfuse agent collect\`)`,
      );
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
    throw invalid(`manifest.json does not match the bundle schema: ${schemaProblems(parsed.error.issues)}`);
  }
  return parsed.data;
}
