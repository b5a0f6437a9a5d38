// The `gramfuse` processes benchmarks run: a CLI command to completion, and a coordinator (`coordinator serve --json`)
// that is asked for its port and stopped with SIGTERM.
import { type ChildProcess, spawn } from 'node:child_process';
import { join, resolve } from 'node:path';

const cli = join(resolve(import.meta.dirname, '..'), 'dist/cli/main.js');

/** Runs `gramfuse …` (the built CLI) and collects its output. */
export function runGramfuse(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => resolvePromise({ code: code ?? -1, stdout, stderr }));
  });
}

export interface CoordinatorProcess {
  readonly process: ChildProcess;
  readonly port: number;
  /** What it has written on stderr so far (for error messages). */
  log(): string;
  /** SIGTERM, then waits for it to exit. */
  stop(): Promise<void>;
}

/** Starts `gramfuse coordinator serve --listen 127.0.0.1:0 --json` with `args`, once it has said its port. */
export async function startCoordinator(args: readonly string[]): Promise<CoordinatorProcess> {
  const child = spawn(process.execPath, [cli, 'coordinator', 'serve', '--listen', '127.0.0.1:0', '--json', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (log += c));
  const port = await new Promise<number>((resolvePromise, reject) => {
    child.stdout.setEncoding('utf8').once('data', (c: string) => resolvePromise((JSON.parse(c.split('\n')[0]!) as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`coordinator exited (${code}):\n${log}`)));
  });
  return {
    process: child,
    port,
    log: () => log,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
