import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { FileStore } from '../../../coordinator/index.js';
import { statisticStoreContract } from '../../helpers/statistic-store-contract.js';

const made: string[] = [];
async function fresh(): Promise<FileStore> {
  const dir = await mkdtemp(join(tmpdir(), 'gramfuse-store-'));
  made.push(dir);
  return new FileStore(dir);
}
afterAll(async () => {
  for (const dir of made) await rm(dir, { recursive: true, force: true });
});

statisticStoreContract('FileStore', fresh);

describe('FileStore as files', () => {
  it('leaves no temporary file after a write and hides a stray one from list()', async () => {
    const store = await fresh();
    await store.write(['jobs', 'j', 'state.json'], '{}');
    expect(await readdir(store.path('jobs', 'j'))).toEqual(['state.json']);
    await writeFile(store.path('jobs', 'j', 'state.json.tmp-123'), 'half');
    expect(await store.list(['jobs', 'j'])).toEqual(['state.json']);
  });
});
