import { type ChildProcess, spawn } from 'node:child_process';

import { CLI } from './cli.js';

/**
 * A real solver worker process (`gramfuse solver serve --insecure-loopback`), one onnxruntime thread, on the CPU.
 * `env` adds GRAMFUSE_FAILPOINT (SIGKILL at a site) or GRAMFUSE_FAULT (misbehave at a site) for the fault tests.
 */
export class SolverProcess {
  log = '';
  /** How the process ended: a signal name or an exit code; undefined while it runs. */
  exit: string | number | undefined;
  private readonly child: ChildProcess;
  readonly exited: Promise<void>;

  constructor(
    readonly identity: string,
    coordinator: string,
    /** A bare NATS URL, or the whole `--nats URL --nats-tls-ca … --nats-creds …` flags. */
    nats: string | readonly string[],
    env: Record<string, string> = {},
    /** More flags of `solver serve` (e.g. --solve-timeout). */
    args: string[] = [],
  ) {
    this.child = spawn(
      process.execPath,
      [
        CLI,
        'solver',
        'serve',
        '--coordinator',
        coordinator,
        ...(typeof nats === 'string' ? ['--nats', nats] : nats),
        '--insecure-loopback',
        '--identity',
        identity,
        '--device',
        'cpu',
        '--threads',
        '1',
        ...args,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } },
    );
    this.child.stderr!.setEncoding('utf8').on('data', (c: string) => (this.log += c));
    this.child.stdout!.setEncoding('utf8').on('data', (c: string) => (this.log += c));
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code, signal) => {
        this.exit = signal ?? code ?? -1;
        resolve();
      }),
    );
  }

  /** Resolves once the worker has pulled from the queue (its ready line), or rejects if it exits first. */
  async ready(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.log.includes(' ready on ')) {
      if (this.exit !== undefined) throw new Error(`solver ${this.identity} exited (${this.exit}) before it was ready:\n${this.log}`);
      if (Date.now() > deadline) throw new Error(`solver ${this.identity} not ready in ${timeoutMs} ms:\n${this.log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.exit === undefined) this.child.kill(signal);
    await this.exited;
  }
}
