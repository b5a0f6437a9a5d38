import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Debian's nats-server (package nats-server); .ci/run installs it when missing. */
export const NATS_SERVER = ['/usr/sbin/nats-server', '/usr/bin/nats-server'].find((p) => existsSync(p)) ?? 'nats-server';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

/**
 * A configuration file for nats-server and the environment its `$VARIABLES` come from; GRAMFUSE_NATS_LISTEN and
 * GRAMFUSE_NATS_STORE are set to the server's free port and temporary store.
 */
export interface NatsServerConfig {
  readonly file: string;
  readonly env: Readonly<Record<string, string>>;
}

/**
 * A real `nats-server -js` of the test's own, on a free port with a temporary store. `kill` (SIGKILL)
 * and `start` again keep the port and the store, as an operator's restart would.
 */
export class NatsServer {
  private child: ChildProcess | undefined;
  private log = '';

  private constructor(
    readonly port: number,
    readonly storeDir: string,
    private readonly config?: NatsServerConfig,
  ) {}

  /** What the server printed since it last started. */
  get output(): string {
    return this.log;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** `config`: run with that configuration file instead of bare `-js` (see NatsServerConfig). */
  static async start(config?: NatsServerConfig): Promise<NatsServer> {
    const server = new NatsServer(await freePort(), await mkdtemp(join(tmpdir(), 'gramfuse-nats-')), config);
    await server.start();
    return server;
  }

  async start(): Promise<void> {
    this.log = '';
    const args =
      this.config === undefined ? ['-js', '-a', '127.0.0.1', '-p', String(this.port), '-sd', this.storeDir] : ['-c', this.config.file];
    const env = {
      ...process.env,
      ...this.config?.env,
      GRAMFUSE_NATS_LISTEN: `127.0.0.1:${this.port}`,
      GRAMFUSE_NATS_STORE: this.storeDir,
    };
    const child = spawn(NATS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.child = child;
    const collect = (chunk: Buffer): void => {
      this.log += chunk.toString('utf8');
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`nats-server did not start in 15 s:\n${this.log}`)), 15_000);
      const check = (): void => {
        if (this.log.includes('Server is ready')) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout.on('data', check);
      child.stderr.on('data', check);
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`nats-server exited (${code}):\n${this.log}`));
      });
    });
  }

  /** kill -9: no goodbye to clients. */
  async kill(): Promise<void> {
    const child = this.child;
    if (child === undefined || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
    this.child = undefined;
  }

  async stop(): Promise<void> {
    await this.kill();
    await rm(this.storeDir, { recursive: true, force: true });
  }
}
