// The `gramfuse` processes benchmarks run: a CLI command to completion, and a coordinator (`coordinator serve --json`)
// that is asked for its port and stopped with SIGTERM.
import { type ChildProcess, spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

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

/**
 * The port a child process listens on, from the `{"port": N}` it prints as its first stdout line; rejects with what it
 * wrote on stderr if it exits first. `log` gives that stderr so far.
 */
export async function listeningPort(child: ChildProcess, what: string): Promise<{ port: number; log: () => string }> {
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (log += c));
  const port = await new Promise<number>((resolvePort, reject) => {
    createInterface({ input: child.stdout! }).once('line', (line) => resolvePort((JSON.parse(line) as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`${what} exited (${code}):\n${log}`)));
  });
  return { port, log: () => log };
}

/** SIGTERM, then waits for the process to exit (nothing when it has exited already). */
export async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/** Starts `gramfuse coordinator serve --listen <listen> --json` with `args`, once it has said its port. */
export async function startCoordinator(args: readonly string[], listen = '127.0.0.1:0'): Promise<CoordinatorProcess> {
  const child = spawn(process.execPath, [cli, 'coordinator', 'serve', '--listen', listen, '--json', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { port, log } = await listeningPort(child, 'coordinator');
  return { process: child, port, log, stop: () => stopProcess(child) };
}
