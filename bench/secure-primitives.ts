// bench/secure-primitives (issue #18, its hot path measured before the protocol is built on it): Z/2⁶⁴ addition on
// BigUint64Array (what shared/secure-aggregation uses) against paired 32-bit lanes of the same bytes, AES-256-CTR
// masking, and the fixed-point encoding and decoding, in entries per second. A BERT-base owner sends ≈ 1.1·10⁸
// entries per job; an 8B-parameter LLM's Grams ≈ 5·10⁹.
import { randomBytes } from 'node:crypto';

import {
  applyMask,
  decodeFixedPoint,
  encodeFixedPoint,
  fixedPointScale,
  ringAddInto,
  ringAddIntoLanes,
} from '../shared/secure-aggregation/index.js';
import { type BenchContext, median, table } from './harness.js';

function time(repeats: number, run: () => void): number {
  const seconds: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const started = performance.now();
    run();
    seconds.push((performance.now() - started) / 1000);
  }
  return median(seconds);
}

export function benchSecurePrimitives(context: BenchContext): Promise<void> {
  const entries = context.quick ? 1 << 20 : 1 << 23;
  const repeats = context.quick ? 3 : 5;
  const a = new BigUint64Array(randomBytes(8 * entries).buffer.slice(0));
  const b = new BigUint64Array(randomBytes(8 * entries).buffer.slice(0));
  const [la, lb] = [new Uint32Array(a.buffer), new Uint32Array(b.buffer)];
  const values = Float64Array.from({ length: entries }, (_, i) => Math.sin(i) * 100);
  const scale = fixedPointScale(7, 5);
  const seed = new Uint8Array(randomBytes(32));
  const encoded = encodeFixedPoint(values, scale, 'bench');
  const rows: [string, number][] = [
    ['add, BigUint64Array (used)', time(repeats, () => ringAddInto(a, b))],
    ['add, 32-bit lanes', time(repeats, () => ringAddIntoLanes(la, lb))],
    ['mask (AES-256-CTR keystream + add)', time(repeats, () => applyMask(a, seed, 'bench', 1))],
    ['fixed-point encode (lanes)', time(repeats, () => void encodeFixedPoint(values, scale, 'bench'))],
    ['fixed-point decode (lanes)', time(repeats, () => void decodeFixedPoint(encoded, scale))],
  ];
  for (const [op, seconds] of rows) context.emit({ bench: 'secure-primitives', op, entries, seconds, entriesPerSecond: entries / seconds });
  const baseline = rows[0]![1];
  context.print(
    [
      `secure-primitives — ${entries.toLocaleString('en')} entries of Z/2⁶⁴ per call, median of ${repeats}`,
      table(
        ['operation', 'ms', 'entries/s', 'vs BigUint64Array add'],
        rows.map(([op, s]) => [op, (1000 * s).toFixed(1), (entries / s).toExponential(2), (s / baseline).toFixed(1)]),
      ),
    ].join('\n'),
  );
  return Promise.resolve();
}
