// The tensors of a Hugging Face directory, located without reading them: `model.safetensors`, or the shards listed by
// `model.safetensors.index.json`. Every header is checked (JSON, dtype, shape against its byte range, ranges inside
// the file and disjoint: shared/merge/safetensors.ts), a shard must be a plain file name inside the directory, and
// every tensor the index names must be in the shard it names.
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';

import { ErrorCode, fileError, GramfuseError } from '../errors.js';
import { readSafetensorsHeader } from '../merge/safetensors.js';

/** One tensor of the directory: which file, its dtype and shape, and its absolute byte range in that file. */
export interface CheckpointTensorLocation {
  readonly name: string;
  /** The file's name inside the directory (never a path). */
  readonly file: string;
  /** Safetensors dtype: F32, F16, BF16, … */
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly begin: number;
  readonly end: number;
}

const invalid =
  (path: string) =>
  (reason: string): GramfuseError =>
    new GramfuseError(ErrorCode.CheckpointMismatch, `${path}: not a readable safetensors checkpoint: ${reason}`, { facts: { path } });

/** True when `path` is a directory holding a Hugging Face `config.json`. */
export async function isHfDirectory(path: string): Promise<boolean> {
  const info = await stat(path).catch(() => undefined);
  if (info === undefined || !info.isDirectory()) return false;
  return (await stat(join(path, 'config.json')).catch(() => undefined))?.isFile() === true;
}

/** Every tensor of the directory's safetensors file(s), by name. */
export async function locateCheckpointTensors(dir: string): Promise<Map<string, CheckpointTensorLocation>> {
  const indexPath = join(dir, 'model.safetensors.index.json');
  const indexText = await readFile(indexPath, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw fileError(error, indexPath, 'reading the shard index');
  });
  let weightMap: Map<string, string> | undefined;
  let files: string[];
  if (indexText !== undefined) {
    let parsed: unknown;
    try {
      parsed = (JSON.parse(indexText) as { weight_map?: unknown }).weight_map;
    } catch (error) {
      throw invalid(indexPath)(`not JSON (${(error as Error).message})`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw invalid(indexPath)('no weight_map object');
    weightMap = new Map();
    for (const [name, file] of Object.entries(parsed as Record<string, unknown>)) {
      if (typeof file !== 'string' || file === '' || file !== basename(file) || file === '.' || file === '..')
        throw invalid(indexPath)(`tensor ${name}: shard ${JSON.stringify(file)} is not a file name inside the directory`);
      weightMap.set(name, file);
    }
    files = [...new Set(weightMap.values())].sort();
  } else if ((await stat(join(dir, 'model.safetensors')).catch(() => undefined))?.isFile() === true) {
    files = ['model.safetensors'];
  } else {
    const found = await readdir(dir).catch((error: unknown) => {
      throw fileError(error, dir, 'reading the checkpoint directory');
    });
    throw new GramfuseError(
      ErrorCode.FileNotFound,
      `${dir}: no model.safetensors or model.safetensors.index.json (found: ${found.slice(0, 8).join(', ') || 'nothing'}); save the checkpoint with save_pretrained(safe_serialization=True)`,
      { facts: { path: dir } },
    );
  }
  const tensors = new Map<string, CheckpointTensorLocation>();
  for (const file of files) {
    const path = join(dir, file);
    const { entries } = await readSafetensorsHeader(path, invalid(path));
    for (const [name, e] of entries) {
      if (tensors.has(name)) throw invalid(path)(`tensor ${name} is also in ${tensors.get(name)!.file}`);
      const listed = weightMap?.get(name);
      if (weightMap !== undefined && listed !== file)
        throw invalid(indexPath)(
          `tensor ${name} is in ${file} but the index ${listed === undefined ? 'does not list it' : `says ${listed}`}`,
        );
      tensors.set(name, { name, file, dtype: e.dtype, shape: e.shape, begin: e.begin, end: e.end });
    }
  }
  if (weightMap !== undefined)
    for (const [name, file] of weightMap)
      if (!tensors.has(name)) throw invalid(join(dir, file))(`the index lists tensor ${name} here, the file does not hold it`);
  return tensors;
}
