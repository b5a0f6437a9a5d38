import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
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

  /** `sync: false` skips the fsync (for data whose commit point is a later fsynced record, e.g. a receipt). */
  async write(parts: string[], data: Uint8Array | string, sync = true): Promise<void> {
    await writeFileAtomic(this.path(...parts), data, 'writing coordinator state', true, sync);
  }

  /** Writes `data` at `offset` of a file (created when missing), without fsync: chunks of a statistic being assembled. */
  async writeAt(parts: string[], offset: number, data: Uint8Array): Promise<void> {
    const path = this.path(...parts);
    try {
      await mkdir(join(path, '..'), { recursive: true });
      const handle = await open(path, constants.O_RDWR | constants.O_CREAT);
      try {
        await handle.write(data, 0, data.byteLength, offset);
      } finally {
        await handle.close();
      }
    } catch (error) {
      throw fileError(error, path, 'writing an uploaded chunk');
    }
  }

  /** Appends lines to a file; with `sync`, fsyncs before returning (a commit point). */
  async appendLines(parts: string[], lines: readonly string[], sync: boolean): Promise<void> {
    const path = this.path(...parts);
    try {
      await mkdir(join(path, '..'), { recursive: true });
      const handle = await open(path, 'a');
      try {
        await handle.write(lines.map((l) => `${l}\n`).join(''));
        if (sync) await handle.sync();
      } finally {
        await handle.close();
      }
    } catch (error) {
      throw fileError(error, path, 'appending to coordinator state');
    }
  }

  /** fsyncs files written earlier without it (a group commit: one pass for many statistics). */
  async sync(paths: readonly string[][]): Promise<void> {
    for (const parts of paths) {
      const path = this.path(...parts);
      try {
        const handle = await open(path, 'r');
        try {
          await handle.sync();
        } finally {
          await handle.close();
        }
      } catch (error) {
        throw fileError(error, path, 'making coordinator state durable');
      }
    }
  }

  async rename(from: string[], to: string[]): Promise<void> {
    try {
      await mkdir(this.path(...to, '..'), { recursive: true });
      await rename(this.path(...from), this.path(...to));
    } catch (error) {
      throw fileError(error, this.path(...to), 'moving coordinator state into place');
    }
  }

  /** SHA-256 and size of a file, read in 4 MiB pieces. */
  async sha256(parts: string[]): Promise<{ sha256: string; bytes: number }> {
    const path = this.path(...parts);
    const hash = createHash('sha256');
    const buffer = Buffer.allocUnsafe(4 * 1024 * 1024);
    let bytes = 0;
    try {
      const handle = await open(path, 'r');
      try {
        for (;;) {
          const { bytesRead } = await handle.read(buffer, 0, buffer.byteLength, bytes);
          if (bytesRead === 0) break;
          hash.update(buffer.subarray(0, bytesRead));
          bytes += bytesRead;
        }
      } finally {
        await handle.close();
      }
    } catch (error) {
      throw fileError(error, path, 'reading coordinator state');
    }
    return { sha256: hash.digest('hex'), bytes };
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
