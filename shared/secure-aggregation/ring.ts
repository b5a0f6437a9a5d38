// Vectors in Z/2⁶⁴ (DESIGN §8): BigUint64Array, one 64-bit word per entry. Measured (bench secure-primitives, Node 20):
// addition and subtraction with BigInt.asUintN(64, ·) on BigUint64Array elements are compiled to native 64-bit
// arithmetic and run ≈ 4× faster than the same on paired 32-bit lanes; converting between BigInt and Number is the
// slow part, so the fixed-point codec reads and writes the same buffer as 32-bit lanes instead (fixed-point.ts).

/** A ring vector of `entries` values, zero. */
export function ringVector(entries: number): BigUint64Array {
  return new BigUint64Array(entries);
}

/** a ← a + b (mod 2⁶⁴), entry by entry. */
export function ringAddInto(a: BigUint64Array, b: BigUint64Array): void {
  if (a.length !== b.length) throw new RangeError(`ring vectors of ${a.length} and ${b.length} entries`);
  for (let i = 0; i < a.length; i++) a[i] = BigInt.asUintN(64, a[i]! + b[i]!);
}

/** a ← a − b (mod 2⁶⁴), entry by entry. */
export function ringSubInto(a: BigUint64Array, b: BigUint64Array): void {
  if (a.length !== b.length) throw new RangeError(`ring vectors of ${a.length} and ${b.length} entries`);
  for (let i = 0; i < a.length; i++) a[i] = BigInt.asUintN(64, a[i]! - b[i]!);
}

/** The same addition on paired 32-bit lanes of the same bytes (the alternative bench secure-primitives measures). */
export function ringAddIntoLanes(a: Uint32Array, b: Uint32Array): void {
  for (let i = 0; i < a.length; i += 2) {
    const lo = a[i]! + b[i]!;
    const carry = lo > 0xffffffff ? 1 : 0;
    a[i] = lo >>> 0;
    a[i + 1] = (a[i + 1]! + b[i + 1]! + carry) >>> 0;
  }
}
