/**
 * TIES-merging (trim, elect sign, disjoint mean) over the statistics contract, in two rounds so that it
 * federates: round 1 each owner sends its trimmed task vector τ̂ᵢ (the coordinator sums them and elects
 * the sign per coordinate); round 2 each owner sends τ̂ᵢ where it agrees with the elected sign, and a count.
 * The coordinator only adds; owners never see each other's vectors.
 */

/** Owner side, round 1: τᵢ = θᵢ − base, keeping the `k` fraction of largest magnitudes over all parameters. */
export function tiesTrim(
  theta: ReadonlyMap<string, Float64Array>,
  base: ReadonlyMap<string, Float64Array>,
  k: number,
): Map<string, Float64Array> {
  const tau = new Map<string, Float64Array>();
  let total = 0;
  for (const [name, values] of theta) {
    const b = base.get(name)!;
    const t = new Float64Array(values.length);
    for (let i = 0; i < t.length; i++) t[i] = values[i]! - b[i]!;
    tau.set(name, t);
    total += t.length;
  }
  const magnitudes = new Float64Array(total);
  let offset = 0;
  for (const t of tau.values()) {
    for (let i = 0; i < t.length; i++) magnitudes[offset + i] = Math.abs(t[i]!);
    offset += t.length;
  }
  magnitudes.sort();
  const keep = Math.max(1, Math.round(k * total));
  const threshold = magnitudes[total - keep]!;
  for (const t of tau.values()) for (let i = 0; i < t.length; i++) if (Math.abs(t[i]!) < threshold) t[i] = 0;
  return tau;
}

/** Coordinator, after round 1: the elected sign per coordinate, from the sum of trimmed vectors. */
export function tiesElect(sumTrimmed: ReadonlyMap<string, Float64Array>): Map<string, Int8Array> {
  const out = new Map<string, Int8Array>();
  for (const [name, sum] of sumTrimmed)
    out.set(
      name,
      Int8Array.from(sum, (v) => Math.sign(v)),
    );
  return out;
}

/** Owner side, round 2: the entries of τ̂ᵢ that agree with the elected sign, and 1 where they do. */
export function tiesAgree(
  trimmed: ReadonlyMap<string, Float64Array>,
  elected: ReadonlyMap<string, Int8Array>,
): { values: Map<string, Float64Array>; counts: Map<string, Float64Array> } {
  const values = new Map<string, Float64Array>();
  const counts = new Map<string, Float64Array>();
  for (const [name, t] of trimmed) {
    const sign = elected.get(name)!;
    const v = new Float64Array(t.length);
    const c = new Float64Array(t.length);
    for (let i = 0; i < t.length; i++) {
      if (t[i] !== 0 && Math.sign(t[i]!) === sign[i]) {
        v[i] = t[i]!;
        c[i] = 1;
      }
    }
    values.set(name, v);
    counts.set(name, c);
  }
  return { values, counts };
}

/** Coordinator, after round 2: base + λ·(disjoint mean of agreeing entries). */
export function tiesFinish(
  base: ReadonlyMap<string, Float64Array>,
  sumAgree: ReadonlyMap<string, Float64Array>,
  countAgree: ReadonlyMap<string, Float64Array>,
  lambda: number,
): Map<string, Float64Array> {
  const out = new Map<string, Float64Array>();
  for (const [name, b] of base) {
    const s = sumAgree.get(name)!;
    const c = countAgree.get(name)!;
    out.set(
      name,
      Float64Array.from(b, (v, i) => v + (c[i]! > 0 ? (lambda * s[i]!) / c[i]! : 0)),
    );
  }
  return out;
}

/** Element-wise sum of maps of equal shape (the coordinator's only operation). */
export function sumMaps(maps: readonly ReadonlyMap<string, Float64Array>[]): Map<string, Float64Array> {
  const out = new Map<string, Float64Array>();
  for (const map of maps) {
    for (const [name, values] of map) {
      const sum = out.get(name);
      if (sum === undefined) out.set(name, values.slice());
      else for (let i = 0; i < sum.length; i++) sum[i] = sum[i]! + values[i]!;
    }
  }
  return out;
}
