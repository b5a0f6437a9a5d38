// Issue 41 item 4 (deploy/): the systemd units run what they say. Each gramfuse unit's ExecStartPre (gramfuse doctor)
// and ExecStart are taken from the unit file as written, with /etc/gramfuse and /var/lib/gramfuse moved under a
// temporary root and the settings of deploy/gramfuse.env.example replaced by loopback ones, and run for real against
// nats-server started with deploy/nats-server.conf: the preflights pass, the coordinator listens, the solver worker
// reports ready, the dashboard serves its page. The hardening every unit must carry is checked line by line.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { copyFile, chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { nkeys } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type CertificateRole, issueCertificate } from '../../shared/security/index.js';
import { CLI, REPO, runCli } from '../helpers/cli.js';
import { SecureNats } from '../helpers/nats-secure.js';

const SYSTEMD = join(REPO, 'deploy', 'systemd');
const GRAMFUSE_UNITS = ['gramfuse-coordinator.service', 'gramfuse-solver@.service', 'gramfuse-dashboard.service'];

/** A unit file's settings: key → values (continuation lines joined), comments dropped. */
function parseUnit(text: string): Map<string, string[]> {
  const settings = new Map<string, string[]>();
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  for (const line of lines) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (match === null) continue;
    settings.set(match[1]!, [...(settings.get(match[1]!) ?? []), match[2]!.replace(/\s+/g, ' ').trim()]);
  }
  return settings;
}

const unit = async (name: string): Promise<Map<string, string[]>> => parseUnit(await readFile(join(SYSTEMD, name), 'utf8'));
const one = (settings: Map<string, string[]>, key: string): string => {
  const values = settings.get(key) ?? [];
  expect(values, key).toHaveLength(1);
  return values[0]!;
};

let nats: SecureNats;
let root: string;
const env: Record<string, string> = {};
const children: ChildProcess[] = [];

/** A unit's command line with the temporary root, this test's settings and the built CLI. */
function command(line: string): { file: string; args: string[] } {
  const expanded = line
    .replace(/\$\{([A-Z_]+)\}/g, (_, name: string) => {
      const value = env[name];
      if (value === undefined) throw new Error(`the unit uses \${${name}}, which this test does not set`);
      return value;
    })
    .replaceAll('/etc/gramfuse/', `${root}/etc/`)
    .replaceAll('/var/lib/gramfuse/', `${root}/var/`);
  const [file, ...args] = expanded.split(' ');
  if (file === '/usr/local/bin/gramfuse') return { file: process.execPath, args: [CLI, ...args] };
  return { file: file!, args };
}

/** Starts a unit's ExecStart and resolves with its output once `ready` matches it. */
function start(line: string, ready: RegExp): Promise<{ child: ChildProcess; output: () => string }> {
  const { file, args } = command(line);
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args.slice(1, 3).join(' ')} not ready in 30 s:\n${output}`)), 30_000);
    const seen = (chunk: Buffer): void => {
      output += chunk.toString();
      if (ready.test(output)) {
        clearTimeout(timer);
        resolve({ child, output: () => output });
      }
    };
    child.stdout.on('data', seen);
    child.stderr.on('data', seen);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code}:\n${output}`));
    });
  });
}

async function preflight(line: string): Promise<void> {
  const { args } = command(line);
  const result = await runCli(args.slice(1));
  expect(result.code, `${args.slice(1).join(' ')}\n${result.stdout}${result.stderr}`).toBe(0);
  expect(result.stdout).not.toMatch(/^fail/m);
  for (const check of ['certificate.chain', 'certificate.role', 'certificate.expiry', 'key.permissions', 'key.match', 'nats', 'disk'])
    expect(result.stdout).toMatch(new RegExp(`^ok +${check.replace('.', '\\.')}  `, 'm'));
}

beforeAll(async () => {
  nats = await SecureNats.start();
  root = await mkdtemp(join(tmpdir(), 'gramfuse-deploy-'));
  await mkdir(join(root, 'etc', 'tls'), { recursive: true });
  await mkdir(join(root, 'etc', 'nats'), { recursive: true });
  // The federation CA signs NATS's certificate and every party's: one ca.pem, as README's "Deploying" lays out.
  await copyFile(nats.caFile, join(root, 'etc', 'tls', 'ca.pem'));
  const parties: [string, CertificateRole, string[]][] = [
    ['coordinator', 'server', ['localhost', '127.0.0.1']],
    ['solver', 'solver', []],
    ['dashboard', 'observer', []],
  ];
  for (const [name, role, hosts] of parties) {
    const cert = await issueCertificate(nats.ca, name, { role, hosts });
    await writeFile(join(root, 'etc', 'tls', `${name}.pem`), cert.certPem);
    await writeFile(join(root, 'etc', 'tls', `${name}-key.pem`), cert.keyPem, { mode: 0o600 });
  }
  for (const role of ['coordinator', 'solver', 'observer'] as const) {
    await copyFile(nats.roles[role].seedFile, join(root, 'etc', 'nats', `${role}.nk`));
    await chmod(join(root, 'etc', 'nats', `${role}.nk`), 0o600);
  }
  // StateDirectory= makes these under systemd.
  for (const dir of ['coordinator', 'solver', 'dashboard']) await mkdir(join(root, 'var', dir), { recursive: true, mode: 0o700 });
  Object.assign(env, {
    GRAMFUSE_LISTEN: '127.0.0.1:0',
    GRAMFUSE_CREATORS: 'creator',
    GRAMFUSE_SOLVER_IDENTITIES: 'solver',
    GRAMFUSE_OBSERVERS: 'dashboard',
    GRAMFUSE_SOLVERS: 'nats',
    GRAMFUSE_DASHBOARD_LISTEN: '127.0.0.1:0',
    GRAMFUSE_NATS_URL: nats.url,
  });
});

afterAll(async () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  await nats?.stop();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

describe('deploy/systemd units', () => {
  it('carry the hardening, run as the gramfuse user and write only their state directory', async () => {
    for (const name of GRAMFUSE_UNITS) {
      const settings = await unit(name);
      expect(one(settings, 'User'), name).toBe('gramfuse');
      expect(one(settings, 'NoNewPrivileges'), name).toBe('yes');
      expect(one(settings, 'ProtectSystem'), name).toBe('strict');
      expect(one(settings, 'PrivateTmp'), name).toBe('yes');
      expect(one(settings, 'ProtectHome'), name).toBe('yes');
      expect(one(settings, 'CapabilityBoundingSet'), name).toBe('');
      const state = `/var/lib/${one(settings, 'StateDirectory')}`;
      expect(one(settings, 'ReadWritePaths'), name).toBe(state);
      // Every directory a command writes (coordinator --state, doctor --work-dir) is that one.
      for (const line of [...(settings.get('ExecStart') ?? []), ...(settings.get('ExecStartPre') ?? [])])
        for (const match of line.matchAll(/--(?:state|work-dir) (\S+)/g)) expect(match[1], `${name}: ${line}`).toBe(state);
      // Private keys and seeds are read from their own files, never passed in the environment or on the line.
      expect(one(settings, 'ExecStart')).not.toMatch(/PASSWORD|BEGIN/);
    }
    // systemd's own parser, where this machine has it: no unknown setting, no bad value. The binaries are not installed
    // here, which is the one complaint expected.
    const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
    if (analyze.status === 0)
      for (const name of [...GRAMFUSE_UNITS, 'gramfuse-nats.service']) {
        const verified = spawnSync('systemd-analyze', ['verify', '--man=no', join(SYSTEMD, name)], { encoding: 'utf8' });
        const complaints = `${verified.stdout}${verified.stderr}`
          .split('\n')
          .filter((line) => line.trim() !== '' && !/Command \S+ is not executable: No such file or directory/.test(line));
        expect(complaints, name).toEqual([]);
      }
    const natsUnit = await unit('gramfuse-nats.service');
    expect(one(natsUnit, 'User')).toBe('nats');
    expect(one(natsUnit, 'ProtectSystem')).toBe('strict');
    expect(one(natsUnit, 'ReadWritePaths')).toBe(`/var/lib/${one(natsUnit, 'StateDirectory')}`);
    expect(one(natsUnit, 'NoNewPrivileges')).toBe('yes');
    expect(one(natsUnit, 'PrivateTmp')).toBe('yes');
  });

  it('use only settings that deploy/gramfuse.env.example defines, and that example sets every variable of nats-server.conf', async () => {
    const example = await readFile(join(REPO, 'deploy', 'gramfuse.env.example'), 'utf8');
    const defined = new Set([...example.matchAll(/^([A-Z_]+)=/gm)].map((m) => m[1]!));
    const used = new Set<string>();
    for (const name of (await readdir(SYSTEMD)).filter((f) => f.endsWith('.service')))
      for (const match of (await readFile(join(SYSTEMD, name), 'utf8')).matchAll(/\$\{([A-Z_]+)\}/g)) used.add(match[1]!);
    for (const match of (await readFile(join(REPO, 'deploy', 'nats-server.conf'), 'utf8')).matchAll(/\$(GRAMFUSE_[A-Z_]+)/g))
      used.add(match[1]!);
    expect(used.size).toBeGreaterThan(10);
    for (const name of used) expect(defined, name).toContain(name);
  });

  it("nats-server's unit: its config test (ExecStartPre) accepts deploy/nats-server.conf with the example's settings", async () => {
    const settings = await unit('gramfuse-nats.service');
    const [file, ...args] = one(settings, 'ExecStartPre')
      .replace('/etc/gramfuse/nats-server.conf', join(REPO, 'deploy', 'nats-server.conf'))
      .split(' ');
    const which = spawnSync('sh', ['-c', `command -v ${file!.split('/').at(-1)!}`], { encoding: 'utf8' });
    const binary = which.stdout.trim();
    expect(binary, 'nats-server on PATH').not.toBe('');
    const example = await readFile(join(REPO, 'deploy', 'gramfuse.env.example'), 'utf8');
    const exampleEnv = Object.fromEntries([...example.matchAll(/^([A-Z_]+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]));
    // Real files where the example names them (nats-server -t reads the TLS files) and real NKEYs (it checks them,
    // duplicates included): the example's placeholders are meant to fail this test until replaced.
    const fake = (): string => nkeys.createUser().getPublicKey();
    const tested = spawnSync(binary, args, {
      encoding: 'utf8',
      env: {
        ...process.env,
        ...exampleEnv,
        GRAMFUSE_NATS_TLS_CERT: join(root, 'etc', 'tls', 'coordinator.pem'),
        GRAMFUSE_NATS_TLS_KEY: join(root, 'etc', 'tls', 'coordinator-key.pem'),
        GRAMFUSE_NATS_TLS_CA: join(root, 'etc', 'tls', 'ca.pem'),
        GRAMFUSE_NATS_STORE: join(root, 'var', 'nats'),
        GRAMFUSE_NATS_COORDINATOR_NKEY: fake(),
        GRAMFUSE_NATS_SOLVER_NKEY: fake(),
        GRAMFUSE_NATS_AGENT_MIRROR_NKEY: fake(),
        GRAMFUSE_NATS_OBSERVER_NKEY: fake(),
      },
    });
    expect(tested.status, `${tested.stdout}${tested.stderr}`).toBe(0);
    // And it does fail on a broken configuration: a variable left unset.
    const broken = spawnSync(binary, args, { encoding: 'utf8', env: { PATH: process.env.PATH } });
    expect(broken.status).not.toBe(0);
  });

  it('coordinator, solver worker and dashboard start from their units: preflight, serve, ready', async () => {
    const coordinator = await unit('gramfuse-coordinator.service');
    await preflight(one(coordinator, 'ExecStartPre'));
    const served = await start(one(coordinator, 'ExecStart'), /coordinator listening on \S+:(\d+) \(mTLS\)/);
    const port = /coordinator listening on \S+:(\d+)/.exec(served.output())![1]!;
    env.GRAMFUSE_COORDINATOR = `localhost:${port}`;

    const solver = await unit('gramfuse-solver@.service');
    await preflight(one(solver, 'ExecStartPre'));
    const worker = await start(one(solver, 'ExecStart'), /solver solver ready on (cpu|cuda)/);
    expect(worker.output()).toContain('solver solver ready');

    const dashboard = await unit('gramfuse-dashboard.service');
    await preflight(one(dashboard, 'ExecStartPre'));
    const page = await start(one(dashboard, 'ExecStart'), /dashboard on (http:\/\/\S+)/);
    const url = /dashboard on (http:\/\/\S+)/.exec(page.output())![1]!;
    const response = await fetch(url);
    expect(response.status).toBe(200);
    await response.text();

    // SIGTERM (the units' KillSignal) drains and stops each cleanly.
    for (const { child } of [page, worker, served]) {
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  });
});
