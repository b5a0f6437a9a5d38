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
