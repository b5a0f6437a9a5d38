import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';

import { FileLedger } from '../../shared/audit/index.js';
import { signingKeysAt } from '../../shared/security/index.js';

/** The agent's ledger (work dir/audit.jsonl), signed with a key made on this machine and kept beside it. */
export async function openAgentLedger(workDir: string, identity: string): Promise<FileLedger> {
  // The keys directory is the owner's alone; the key file in it is 0600 (signingKeysAt).
  await mkdir(join(workDir, 'keys'), { recursive: true, mode: 0o700 });
  const keys = await signingKeysAt(join(workDir, 'keys', 'audit.json'), "agent's audit signing key");
  return FileLedger.open(join(workDir, 'audit.jsonl'), keys, identity);
}
