// The StatisticStore contract, as one suite any implementation runs (coordinator/store/statistic-store.ts).
import { createHash } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import type { StatisticStore } from '../../coordinator/index.js';
import { ErrorCode, GramfuseError } from '../../shared/index.js';

async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    return error instanceof GramfuseError ? error.code : `not coded: ${String(error)}`;
  }
  return undefined;
}

/** Runs the contract against stores made by `open` (each test gets a fresh, empty one). */
export function statisticStoreContract(name: string, open: () => Promise<StatisticStore>): void {
  describe(`StatisticStore contract: ${name}`, () => {
    it('reads back what was written, replaces it whole, and says undefined for what is not there', async () => {
      const store = await open();
      expect(await store.read(['jobs', 'j', 'spec.json'])).toBeUndefined();
      expect(await store.readJson(['jobs', 'j', 'spec.json'])).toBeUndefined();
      await store.write(['jobs', 'j', 'spec.json'], JSON.stringify({ a: 1 }));
      await store.write(['jobs', 'j', 'spec.json'], JSON.stringify({ b: 2 }), false);
      expect(await store.readJson(['jobs', 'j', 'spec.json'])).toEqual({ b: 2 });
      expect((await store.read(['jobs', 'j', 'spec.json']))!.toString('utf8')).toBe('{"b":2}');
    });

    it('assembles chunks written at offsets in any order, and reads exact ranges', async () => {
      const store = await open();
      const whole = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) % 251);
      for (const start of [600, 0, 300])
        await store.writeAt(['jobs', 'j', 'partial', 's.bin'], start, whole.subarray(start, Math.min(start + 300, 1000)));
      await store.writeAt(['jobs', 'j', 'partial', 's.bin'], 900, whole.subarray(900));
      expect(Buffer.from(await store.readRange(['jobs', 'j', 'partial', 's.bin'], 0, 1000)).equals(Buffer.from(whole))).toBe(true);
      expect([...(await store.readRange(['jobs', 'j', 'partial', 's.bin'], 250, 3))]).toEqual([...whole.subarray(250, 253)]);
      expect(await codeOf(store.readRange(['jobs', 'j', 'partial', 's.bin'], 990, 20))).toBe(ErrorCode.InvalidData);
      const digest = await store.sha256(['jobs', 'j', 'partial', 's.bin']);
      expect(digest).toEqual({ sha256: createHash('sha256').update(whole).digest('hex'), bytes: 1000 });
    });

    it('writes checked entries in place, replacing what is there, in new directories too', async () => {
      const store = await open();
      await store.writeChecked(['jobs', 'j', 'owners', 'o', 'committed', 'a.bin'], new Uint8Array([1, 2, 3, 4]));
      await store.writeChecked(['jobs', 'j', 'owners', 'o', 'committed', 'a.bin'], new Uint8Array([9, 8]));
      expect([...(await store.read(['jobs', 'j', 'owners', 'o', 'committed', 'a.bin']))!]).toEqual([9, 8]);
      // A directory removed after a write is made again by the next one.
      await store.remove(['jobs', 'j']);
      await store.writeChecked(['jobs', 'j', 'owners', 'o', 'committed', 'a.bin'], new Uint8Array([5]));
      await store.writeAt(['jobs', 'j', 'owners', 'o', 'partial', 'b.bin'], 2, new Uint8Array([7]));
      expect([...(await store.read(['jobs', 'j', 'owners', 'o', 'committed', 'a.bin']))!]).toEqual([5]);
      expect([...(await store.read(['jobs', 'j', 'owners', 'o', 'partial', 'b.bin']))!]).toEqual([0, 0, 7]);
    });

    it('renames into a new directory, syncs, and appends whole lines', async () => {
      const store = await open();
      await store.writeAt(['a', 'partial', 'x.bin'], 0, new Uint8Array([1, 2, 3]));
      await store.rename(['a', 'partial', 'x.bin'], ['a', 'statistics', 'x.bin']);
      await store.sync([['a', 'statistics', 'x.bin']]);
      expect(await store.read(['a', 'partial', 'x.bin'])).toBeUndefined();
      expect([...(await store.read(['a', 'statistics', 'x.bin']))!]).toEqual([1, 2, 3]);
      await store.appendLines(['a', 'receipts.jsonl'], ['{"n":1}', '{"n":2}'], true);
      await store.appendLines(['a', 'receipts.jsonl'], ['{"n":3}'], false);
      expect((await store.read(['a', 'receipts.jsonl']))!.toString('utf8')).toBe('{"n":1}\n{"n":2}\n{"n":3}\n');
    });

    it('lists names (none for a missing directory) and removes trees, missing ones included', async () => {
      const store = await open();
      expect(await store.list(['jobs'])).toEqual([]);
      await store.write(['jobs', 'one', 'state.json'], '{}');
      await store.write(['jobs', 'two', 'state.json'], '{}');
      await store.directory(['jobs', 'three', 'result']);
      expect((await store.list(['jobs'])).sort()).toEqual(['one', 'three', 'two']);
      await store.remove(['jobs', 'two']);
      await store.remove(['jobs', 'never']);
      expect((await store.list(['jobs'])).sort()).toEqual(['one', 'three']);
    });

    it('reports bytes that are not JSON as STATE_CORRUPT, naming the entry', async () => {
      const store = await open();
      await store.write(['jobs', 'j', 'state.json'], '{"state": "open"');
      let caught: unknown;
      try {
        await store.readJson(['jobs', 'j', 'state.json']);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(GramfuseError);
      expect((caught as GramfuseError).code).toBe(ErrorCode.StateCorrupt);
      expect((caught as GramfuseError).message).toContain('state.json');
    });

    it('names entries by path under its root', async () => {
      const store = await open();
      expect(store.path('jobs', 'j', 'template.onnx').startsWith(store.root)).toBe(true);
      expect(store.path('jobs', 'j', 'template.onnx').endsWith('template.onnx')).toBe(true);
    });
  });
}
