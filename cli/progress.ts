import cliProgress from 'cli-progress';

/** A progress bar with counts, rate and ETA on a terminal; silent in CI, in --json mode, or when piped. */
export interface ProgressBar {
  update(value: number, total?: number): void;
  stop(): void;
}

export function progressEnabled(json: boolean): boolean {
  return !json && process.stderr.isTTY && process.env.CI === undefined;
}

export function createProgressBar(label: string, unit: string, enabled: boolean): ProgressBar {
  if (!enabled) return { update: () => undefined, stop: () => undefined };
  const started = Date.now();
  const bar = new cliProgress.SingleBar(
    {
      format: `${label.padEnd(22)} {bar} {value}/{total} ${unit} | {rate} ${unit}/s | ETA {eta_formatted}`,
      stream: process.stderr,
      hideCursor: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  let begun = false;
  return {
    update(value, total) {
      if (!begun) {
        bar.start(total ?? value, 0, { rate: '0' });
        begun = true;
      }
      if (total !== undefined) bar.setTotal(total);
      const seconds = (Date.now() - started) / 1000;
      bar.update(value, { rate: seconds > 0 ? (value / seconds).toFixed(0) : '0' });
    },
    stop() {
      if (begun) bar.stop();
    },
  };
}

/**
 * `--progress-json`: progress as JSON lines on stderr, at most a few a second plus the last one of each
 * phase, for a program that drives the command (the demo shows each owner's progress from them).
 */
export function progressJsonWriter(enabled: boolean): (phase: string, done: number, total: number) => void {
  if (!enabled) return () => undefined;
  const last = new Map<string, number>();
  return (phase, done, total) => {
    const now = Date.now();
    if (done < total && now - (last.get(phase) ?? 0) < 250) return;
    last.set(phase, now);
    process.stderr.write(`${JSON.stringify({ phase, done, total })}\n`);
  };
}
