import { randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';

import { fileError, GramfuseError } from './errors.js';

/**
 * Writes all of `data` (at `position`, or at the file's current position): a single write may write only
 * part of it when the disk fills up, without an error. A write that makes no progress is ENOSPC.
 */
export async function writeAll(handle: FileHandle, data: Uint8Array | string, position?: number): Promise<void> {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  let written = 0;
  while (written < bytes.byteLength) {
    const { bytesWritten } = await handle.write(
      bytes,
      written,
      bytes.byteLength - written,
      position === undefined ? null : position + written,
    );
    if (bytesWritten === 0) throw Object.assign(new Error('no space left on device (a write made no progress)'), { code: 'ENOSPC' });
    written += bytesWritten;
  }
}

/**
 * Writes a file so that it is either absent, the old version, or complete: the parts go to a temporary
 * file beside it, which is fsynced and renamed into place. `what` names the file for error messages.
 * Without `sync` the rename is still atomic for a crashed process, not for a lost machine: use it only for
 * data whose commit point is written (and fsynced) later.
 * `parts` may be produced lazily (an async iterable), so a large file never has to be in memory whole.
 */
export async function writeFileAtomic(
  path: string,
  parts: Uint8Array | string | readonly (Uint8Array | string)[] | AsyncIterable<Uint8Array>,
  what = 'writing the file',
  createDirectory = false,
  sync = true,
  mode = 0o666,
): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    if (createDirectory) await mkdir(dirname(path), { recursive: true });
    const handle = await open(tmp, 'wx', mode);
    try {
      const list: Iterable<Uint8Array | string> | AsyncIterable<Uint8Array> =
        typeof parts === 'string' || parts instanceof Uint8Array ? [parts] : parts;
      for await (const part of list) await writeAll(handle, part);
      if (sync) await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
    // The rename is durable only once the directory entry is: without this a power loss could keep a
    // receipt written later while losing the statistic it acknowledges.
    if (sync) await syncDirectory(dirname(path));
  } catch (error) {
    await rm(tmp, { force: true });
    // A producer's own coded error (a policy refusal, a failed check) is the reason, not the file: it passes through.
    if (error instanceof GramfuseError) throw error;
    throw fileError(error, path, what);
  }
}

/** fsync of a directory, so that renames and creations inside it survive a power loss. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Fails early, with the fix, when the directory a file is to be written into does not exist. */
export async function ensureDirectoryFor(path: string): Promise<void> {
  const dir = dirname(resolve(path));
  try {
    const info = await stat(dir);
    if (!info.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
  } catch (error) {
    throw fileError(error, dir, `writing ${basename(path)} into it (create the directory first)`);
  }
}
