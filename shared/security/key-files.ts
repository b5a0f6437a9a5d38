import { readFile, stat } from 'node:fs/promises';

import { writeFileAtomic } from '../atomic-file.js';
import { ErrorCode, fileError, GramfuseError } from '../errors.js';
import { generateSigningKeys, type SigningKeys } from './receipts.js';

/** Writes a private key (or a file holding one) readable by its owner only (0600), atomically. */
export async function writePrivateFile(path: string, data: string | Uint8Array, what = 'writing a private key'): Promise<void> {
  await writeFileAtomic(path, data, what, true, true, 0o600);
}

/**
 * Reads a private key file, refusing it (KEY_FILE_EXPOSED) when its group or others may read or write it,
 * as ssh does: a key others can read is no longer private, whatever it then signs.
 */
export async function readPrivateFile(path: string, what = 'private key'): Promise<string> {
  let mode: number;
  try {
    mode = (await stat(path)).mode;
  } catch (error) {
    throw fileError(error, path, `reading the ${what}`);
  }
  if ((mode & 0o077) !== 0) {
    throw new GramfuseError(
      ErrorCode.KeyFileExposed,
      `${path}: the ${what} is accessible by group or others (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); restrict it with \`chmod 600 ${path}\``,
      { facts: { path, mode: mode & 0o777 } },
    );
  }
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw fileError(error, path, `reading the ${what}`);
  }
}

/**
 * The Ed25519 signing keys kept at `path` (a ledger's or the receipts' key): read through `readPrivateFile`
 * (KEY_FILE_EXPOSED when others can read it), or made and written 0600 when the file does not exist yet.
 * A file that is there but not valid JSON is INVALID_DATA: a new key would not match what the old one signed.
 */
export async function signingKeysAt(path: string, what: string): Promise<SigningKeys> {
  let text: string | undefined;
  try {
    text = await readPrivateFile(path, what);
  } catch (error) {
    if ((error as GramfuseError).code !== ErrorCode.FileNotFound) throw error;
  }
  if (text === undefined) {
    const keys = generateSigningKeys();
    await writePrivateFile(path, JSON.stringify(keys), `writing the ${what}`);
    return keys;
  }
  try {
    return JSON.parse(text) as SigningKeys;
  } catch {
    throw new GramfuseError(
      ErrorCode.InvalidData,
      `${path}: the ${what} is not valid JSON; restore it from a backup (a new key would not match what this one signed)`,
      { facts: { path } },
    );
  }
}
