import { constants } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { ErrorCode, fileError, GramfuseError, sha256OfFile, syncDirectory, writeAll, writeFileAtomic } from '../../shared/index.js';
import type { StatisticStore } from './statistic-store.js';

/**
 * The coordinator's durable state, as plain files under one directory (DESIGN.md §5). Every write goes to
 * a temporary file that is fsynced and renamed into place, so a crash leaves either the old or the new
 * file, never half of one.
 */
export class FileStore implements StatisticStore {
  /** Directories this store made or found, so the hot paths (a write per uploaded chunk) skip the mkdir call. */
  private readonly directories = new Set<string>();

  constructor(readonly root: string) {}

  private async ensureDirectory(dir: string): Promise<void> {
    if (this.directories.has(dir)) return;
    await mkdir(dir, { recursive: true });
    this.directories.add(dir);
  }

  path(...parts: string[]): string {
    return join(this.root, ...parts);
  }

  /** `sync: false` skips the fsync (for data whose commit point is a later fsynced record, e.g. a receipt). */
  async write(parts: string[], data: Uint8Array | string, sync = true): Promise<void> {
    await writeFileAtomic(this.path(...parts), data, 'writing coordinator state', true, sync);
  }

  /** Writes a file in place (no temporary file, no fsync): bytes whose digest is checked before they are used. */
  async writeChecked(parts: string[], data: Uint8Array): Promise<void> {
    const path = this.path(...parts);
    try {
      await this.ensureDirectory(dirname(path));
      const handle = await open(path, 'w');
      try {
        await writeAll(handle, data);
      } finally {
        await handle.close();
      }
    } catch (error) {
      throw fileError(error, path, 'writing an uploaded statistic');
    }
  }

  /** Writes `data` at `offset` of a file (created when missing), without fsync: chunks of a statistic being assembled. */
  async writeAt(parts: string[], offset: number, data: Uint8Array): Promise<void> {
    const path = this.path(...parts);
    try {
      await this.ensureDirectory(dirname(path));
      const handle = await open(path, constants.O_RDWR | constants.O_CREAT);
      try {
        await writeAll(handle, data, offset);
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
      await this.ensureDirectory(dirname(path));
      const handle = await open(path, 'a');
      try {
        await writeAll(handle, lines.map((l) => `${l}\n`).join(''));
        if (sync) await handle.sync();
      } finally {
        await handle.close();
      }
    } catch (error) {
      throw fileError(error, path, 'appending to coordinator state');
    }
  }

  /**
   * fsyncs files written (or renamed into place) earlier without it, and then their directories, so the
   * renames are durable too: a group commit, one pass for many statistics, before any receipt is written.
   */
  async sync(paths: readonly string[][]): Promise<void> {
    // Several fsyncs at a time: the file system joins concurrent ones into fewer journal commits (a group of 65
    // one-chunk statistics, 14.5 MB: 38 ms one after the other, 16 ms this way, on this machine's ext4).
    await inParallel(
      paths.map((parts) => this.path(...parts)),
      async (path) => {
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
      },
    );
    await inParallel([...new Set(paths.map((parts) => dirname(this.path(...parts))))], async (dir) => {
      try {
        await syncDirectory(dir);
      } catch (error) {
        throw fileError(error, dir, 'making coordinator state durable');
      }
    });
  }

  async rename(from: string[], to: string[]): Promise<void> {
    try {
      await mkdir(this.path(...to, '..'), { recursive: true });
      await rename(this.path(...from), this.path(...to));
    } catch (error) {
      throw fileError(error, this.path(...to), 'moving coordinator state into place');
    }
  }

  /** `length` bytes of a state file from `offset` (a slice of a large statistic). */
  async readRange(parts: string[], offset: number, length: number): Promise<Uint8Array> {
    const path = this.path(...parts);
    try {
      const handle = await open(path, 'r');
      try {
        const buffer = new Uint8Array(length);
        let done = 0;
        while (done < length) {
          const { bytesRead } = await handle.read(buffer, done, length - done, offset + done);
          if (bytesRead === 0) throw new GramfuseError(ErrorCode.InvalidData, `${path}: shorter than expected (${offset + done} bytes)`);
          done += bytesRead;
        }
        return buffer;
      } finally {
        await handle.close();
      }
    } catch (error) {
      if (error instanceof GramfuseError) throw error;
      throw fileError(error, path, 'reading coordinator state');
    }
  }

  /** SHA-256 and size of a state file. */
  sha256(parts: string[]): Promise<{ sha256: string; bytes: number }> {
    return sha256OfFile(this.path(...parts));
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
    if (bytes === undefined) return undefined;
    try {
      return JSON.parse(bytes.toString('utf8')) as T;
    } catch (error) {
      throw new GramfuseError(ErrorCode.StateCorrupt, `${this.path(...parts)}: not valid JSON (${(error as Error).message})`, {
        facts: { path: this.path(...parts) },
      });
    }
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
    // It may have been (or held) a directory made earlier.
    this.directories.clear();
  }
}

/** Runs `work` on every item, at most `width` at a time (libuv's thread pool has 4 threads); rejects with the first failure. */
async function inParallel<T>(items: readonly T[], work: (item: T) => Promise<void>, width = 8): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}
