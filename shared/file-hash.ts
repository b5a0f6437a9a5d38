import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

import { fileError } from './errors.js';

/** SHA-256 and size of a file, read in 4 MiB pieces (never the whole file in memory). */
export async function sha256OfFile(path: string): Promise<{ sha256: string; bytes: number }> {
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
    throw fileError(error, path, 'reading a file to hash it');
  }
  return { sha256: hash.digest('hex'), bytes };
}
