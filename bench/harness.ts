/** What every benchmark gets: where to print, whether to print JSON lines, and the run's knobs. */
export interface BenchContext {
  readonly json: boolean;
  readonly quick: boolean;
  readonly threads: number;
  /** A `--name value` flag of the command line (e.g. scale's `--arch`, `--agents`). */
  option(name: string): string | undefined;
  /** One machine-readable result (printed as one JSON line with --json). */
  emit(result: Record<string, unknown>): void;
  /** A human table (printed without --json). */
  print(text: string): void;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function table(headers: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const cells = rows.map((r) => r.map(String));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]?.length ?? 0)));
  const line = (r: readonly string[]): string => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}
