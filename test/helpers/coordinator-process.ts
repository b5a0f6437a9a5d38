import { type ChildProcess, spawn } from 'node:child_process';

import { CLI } from './cli.js';

/**
 * A real coordinator process (`gramfuse coordinator serve --insecure-loopback`) on a fixed port, so that
 * agents find it again after a restart. `failpoint` ("site:n") makes it SIGKILL itself at that point;
 * `start()` after an exit restarts it on the same state directory.
 */
export class CoordinatorProcess {
  private child: ChildProcess | undefined;
  log = '';
  /** How each run of the process ended: 'SIGKILL' for a failpoint (or kill -9), an exit code otherwise. */
  readonly exits: (string | number)[] = [];
  private exited: Promise<void> = Promise.resolve();

  /** `tlsArgs`: `--tls-ca … --tls-cert … --tls-key …` for an mTLS coordinator; default insecure loopback. */
  constructor(
    readonly port: number,
    readonly stateDir: string,
    readonly tlsArgs?: readonly string[],
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The running process's pid (undefined when stopped). */
  get pid(): number | undefined {
    return this.running ? this.child!.pid : undefined;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** `env`: more environment for the process (e.g. GRAMFUSE_FAULT for a misbehaving coordinator). */
  async start(failpoint?: string, extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<void> {
    const child = spawn(
      process.execPath,
      [
        CLI,
        'coordinator',
        'serve',
        '--listen',
        this.address,
        '--state',
        this.stateDir,
        ...(this.tlsArgs ?? ['--insecure-loopback']),
        '--creators',
        'creator',
        '--json',
        ...extraArgs,
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, ...env, ...(failpoint === undefined ? {} : { GRAMFUSE_FAILPOINT: failpoint }) },
      },
    );
    this.child = child;
    child.stderr.setEncoding('utf8').on('data', (c: string) => (this.log += c));
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        this.exits.push(signal ?? code ?? -1);
        resolve();
      }),
    );
    await new Promise<void>((resolve, reject) => {
      child.stdout.setEncoding('utf8').once('data', () => resolve());
      child.once('exit', (code, signal) => reject(new Error(`coordinator exited at start (${signal ?? code}):\n${this.log}`)));
    });
  }

  /** Resolves when the current process has exited. */
  waitExit(): Promise<void> {
    return this.exited;
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.running) return;
    this.child!.kill(signal);
    await this.exited;
  }
}
