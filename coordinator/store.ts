import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

import { fileError, writeFileAtomic } from '../shared/index.js';

/**
 * The coordinator's durable state, as plain files under one directory (DESIGN.md §5). Every write goes to
 * a temporary file that is fsynced and renamed into place, so a crash leaves either the old or the new
 * file, never half of one.
 */
export class FileStore {
  constructor(readonly root: string) {}

  path(...parts: string[]): string {
    return join(this.root, ...parts);
  }

  async write(parts: string[], data: Uint8Array | string): Promise<void> {
    await writeFileAtomic(this.path(...parts), data, 'writing coordinator state', true);
  }

  /** Creates a directory (and its parents) for files written by other means, e.g. saveModel. */
  async directory(parts: string[]): Promise<void> {
    try {
      await mkdir(this.path(...parts), { recursive: true });
    } catch (error) {
      throw fileError(error, this.path(...parts), 'creating a coordinator state directory');
    }
  }

  async read(parts: string[]): Promise<Buffer | undefined> {
    try {
      return await readFile(this.path(...parts));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw fileError(error, this.path(...parts), 'reading coordinator state');
    }
  }

  async readJson<T>(parts: string[]): Promise<T | undefined> {
    const bytes = await this.read(parts);
    return bytes === undefined ? undefined : (JSON.parse(bytes.toString('utf8')) as T);
  }

  async list(parts: string[]): Promise<string[]> {
    try {
      return (await readdir(this.path(...parts))).filter((name) => !name.includes('.tmp-'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw fileError(error, this.path(...parts), 'listing coordinator state');
    }
  }

  async remove(parts: string[]): Promise<void> {
    await rm(this.path(...parts), { recursive: true, force: true });
  }
}

/** A file-system-safe name for a statistic id (ids contain '/' and '::'). */
export function statisticFile(id: string): string {
  return createHash('sha256').update(id).digest('hex').slice(0, 32);
}
