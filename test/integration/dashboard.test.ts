// @needs-browser
// The dashboard (issue #19) in a real browser: after `gramfuse demo` (a real mTLS federation of three owners), a
// coordinator serves its state again with the dashboard's identity listed as an observer, `gramfuse dashboard`
// reads it over mTLS with the ledgers the auditor holds and a real nats-server, and Debian's chromium, driven
// headless by playwright-core, checks what each page shows against the ledgers and the result files read here
// independently. GRAMFUSE_SCREENSHOTS=1 saves one screenshot per page into docs/ (how docs/dashboard-*.png are made).
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { certsFlags } from '../../cli/index.js';
import { connectFederation } from '../../client/index.js';
import { ErrorCode, type GramfuseError } from '../../shared/index.js';
import { CLI, REPO, runCli } from '../helpers/cli.js';
import { CoordinatorProcess } from '../helpers/coordinator-process.js';
import { exampleModel } from '../helpers/examples.js';
import { freePort, NatsServer } from '../helpers/nats-server.js';

const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find(
  (p): p is string => p !== undefined && existsSync(p),
)!;
const work = mkdtempSync(join(tmpdir(), 'gramfuse-dashboard-'));
const demo = join(work, 'demo');
const certs = join(demo, 'certs');
const shots = process.env.GRAMFUSE_SCREENSHOTS === '1' ? join(REPO, 'docs') : join(work, 'shots');
// The auditor's copy of org1's ledger, under a directory name that is markup: the page must show it as text.
const tampered = join(work, 'copies', '<img src=x>', 'audit.jsonl');

let nats: NatsServer;
let coordinator: CoordinatorProcess;
let dashboard: ChildProcess;
let dashboardLog = '';
let url = '';
let browser: Browser;
let page: Page;
const consoleErrors: string[] = [];

const tls = (name: string): string[] => certsFlags(certs, name);
const clientTls = (name: string) => ({
  caPem: readFileSync(join(certs, 'ca.pem'), 'utf8'),
  certPem: readFileSync(join(certs, `${name}.pem`), 'utf8'),
  keyPem: readFileSync(join(certs, `${name}-key.pem`), 'utf8'),
});

/** The coordinator ledger's statistic.committed records of job demo, by owner: what the job page must show. */
function committedByOwner(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of readFileSync(join(demo, 'coordinator', 'audit.jsonl'), 'utf8').split('\n')) {
    if (line === '') continue;
    const r = JSON.parse(line) as { kind: string; job: string; facts: { owner: string; sha256: string } };
    if (r.kind !== 'statistic.committed' || r.job !== 'demo') continue;
    out.set(r.facts.owner, [...(out.get(r.facts.owner) ?? []), r.facts.sha256]);
  }
  return out;
}

function raw(path: string, init: { method?: string; host?: string }): Promise<{ status: number; headers: Record<string, unknown> }> {
  const target = new URL(path, url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: init.method ?? 'GET',
        headers: { host: init.host ?? target.host },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  const ran = await runCli(['demo', '--out', demo, '--json']);
  expect(ran.code, ran.stderr).toBe(0);
  const issued = await runCli(['certs', 'issue', '--dir', certs, '--name', 'auditor']);
  expect(issued.code, issued.stderr).toBe(0);
  nats = await NatsServer.start();
  coordinator = new CoordinatorProcess(await freePort(), join(demo, 'coordinator'), tls('coordinator'));
  await coordinator.start(undefined, ['--observers', 'auditor', '--nats', nats.url]);
  mkdirSync(join(work, 'copies', '<img src=x>'), { recursive: true });
  cpSync(join(demo, 'org1', 'audit.jsonl'), tampered);
  dashboard = spawn(
    process.execPath,
    [
      CLI,
      'dashboard',
      '--coordinator',
      coordinator.address,
      ...tls('auditor'),
      '--ledger',
      join(demo, 'coordinator', 'audit.jsonl'),
      '--ledger',
      join(demo, 'org0', 'audit.jsonl'),
      '--ledger',
      join(demo, 'org2', 'audit.jsonl'),
      '--ledger',
      tampered,
      '--nats',
      nats.url,
      '--listen',
      '127.0.0.1:0',
      '--json',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  dashboard.stderr!.setEncoding('utf8').on('data', (c: string) => (dashboardLog += c));
  url = await new Promise<string>((resolve, reject) => {
    dashboard.stdout!.setEncoding('utf8').once('data', (c: string) => resolve((JSON.parse(c) as { url: string }).url));
    dashboard.once('exit', (code) => reject(new Error(`dashboard exited (${code}):\n${dashboardLog}`)));
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  mkdirSync(shots, { recursive: true });
}, 300_000);

afterAll(async () => {
  await browser?.close();
  dashboard?.kill('SIGTERM');
  await coordinator?.kill('SIGTERM');
  await nats?.stop();
  rmSync(work, { recursive: true, force: true });
});

describe('gramfuse dashboard in a real browser', () => {
  it('the jobs page lists the demo job, and shows a job created later without a reload (events bus → server-sent events)', async () => {
    await page.goto(url);
    const row = page.locator('#jobs tr[data-job="demo"]');
    expect(await row.textContent()).toMatch(/done/);
    expect(await row.textContent()).toMatch(/org0, org1, org2/);
    expect(await row.textContent()).toMatch(/3\/3 owners uploaded/);
    const creator = connectFederation({ address: coordinator.address, tls: clientTls('creator') });
    await creator.createJob(JSON.stringify({ id: 'live', participants: ['org0', 'org1', 'org2'] }), readFileSync(exampleModel('org0')));
    creator.close();
    await page.locator('#jobs tr[data-job="live"]').waitFor({ timeout: 20_000 });
    expect(await page.locator('#jobs tr[data-job="live"]').textContent()).toMatch(/open/);
    expect(Number(await page.locator('#live').getAttribute('data-updates'))).toBeGreaterThanOrEqual(1);
    await page.screenshot({ path: join(shots, 'dashboard-jobs.png'), fullPage: true });
  });

  it('the job page shows the three owners with their statistic counts and digests, per-layer diagnostics and the merged model', async () => {
    await page.goto(`${url}jobs/demo`);
    const expected = committedByOwner();
    expect([...expected.keys()].sort()).toEqual(['org0', 'org1', 'org2']);
    for (const [owner, digests] of expected) {
      const section = page.locator(`section.owner[data-owner="${owner}"]`);
      expect(Number(await section.locator('.count').getAttribute('data-statistics'))).toBe(digests.length);
      const text = (await section.textContent())!;
      for (const digest of digests) expect(text).toContain(digest);
      // Each receipt in the owner's own ledger (org1's: the auditor's copy, untouched yet) has the coordinator's digest.
      expect(text).toMatch(new RegExp(`${digests.length} of ${digests.length} receipts confirmed by ${owner}'s own ledger`));
    }
    const report = JSON.parse(readFileSync(join(demo, 'coordinator', 'jobs', 'demo', 'result', 'report.json'), 'utf8')) as {
      layers: { group: string }[];
    };
    expect(await page.locator('#layers tbody tr').count()).toBe(report.layers.length);
    expect(await page.locator('figure.chart svg').count()).toBeGreaterThanOrEqual(3);
    const merged = createHash('sha256')
      .update(readFileSync(join(demo, 'coordinator', 'jobs', 'demo', 'result', 'merged.onnx')))
      .digest('hex');
    expect(await page.locator('#artifacts').textContent()).toContain(merged);
    // The coordinator's ledger as a file and as its mirror on GRAMFUSE_AUDIT: its records are shown once.
    expect(await page.locator('#artifact-records tr').filter({ hasText: 'solve.done' }).count()).toBe(1);
    await page.screenshot({ path: join(shots, 'dashboard-job.png'), fullPage: true });
  });

  it('the audit page shows every ledger verified and reconciled; after one flipped byte, that ledger is broken at that record', async () => {
    await page.goto(`${url}audit`);
    const files = [
      join(demo, 'coordinator', 'audit.jsonl'),
      join(demo, 'org0', 'audit.jsonl'),
      join(demo, 'org2', 'audit.jsonl'),
      tampered,
    ];
    for (const file of files) expect(await page.locator('#ledgers tr').filter({ hasText: file }).getAttribute('class')).toBe('verified');
    expect(await page.locator('#ledgers tr.broken').count()).toBe(0);
    // Three agent ledgers against the coordinator's: each agrees.
    expect(await page.locator('#reconcile tr.verified').count()).toBe(3);
    expect(await page.locator('#live-checks').textContent()).toMatch(/matches the ledger/);
    // The markup in the copy's path is text on the page, not an element.
    expect(await page.locator('#ledgers').textContent()).toContain('<img src=x>');
    expect(await page.locator('#ledgers img').count()).toBe(0);
    await page.screenshot({ path: join(shots, 'dashboard-audit.png'), fullPage: true });

    // Flip one byte of one digest in the copy: that record's signature no longer verifies.
    const lines = readFileSync(tampered, 'utf8').split('\n');
    const at = lines.findIndex((l, i) => i >= 4 && l.includes('"sha256":"'));
    const offset = lines[at]!.indexOf('"sha256":"') + '"sha256":"'.length + 10;
    const old = lines[at]![offset]!;
    lines[at] = lines[at]!.slice(0, offset) + (old === 'a' ? 'b' : 'a') + lines[at]!.slice(offset + 1);
    writeFileSync(tampered, lines.join('\n'));
    await page.reload();
    const broken = page.locator('#ledgers tr.broken');
    expect(await broken.count()).toBe(1);
    expect(await broken.getAttribute('data-source')).toBe(tampered);
    expect(await broken.textContent()).toContain(`broken at record ${at + 1}:`);
    expect(await broken.textContent()).toMatch(/signature that does not verify/);
    for (const file of files.slice(0, 3))
      expect(await page.locator('#ledgers tr').filter({ hasText: file }).getAttribute('class')).toBe('verified');
    // A broken ledger is not evidence: its owner is no longer reconciled.
    expect(await page.locator('#reconcile tr.verified').count()).toBe(2);
    expect(consoleErrors.filter((e) => /Content Security Policy|Refused/.test(e))).toEqual([]);
  });

  it('is read-only and locked down: its CSP on every response, GET only, its own host names only, no merged model for an observer', async () => {
    const home = await raw('/', {});
    expect(home.status).toBe(200);
    expect(String(home.headers['content-security-policy'])).toMatch(/default-src 'none'; script-src 'self'; style-src 'self'/);
    expect(home.headers['x-frame-options']).toBe('DENY');
    expect((await raw('/', { method: 'POST' })).status).toBe(405);
    expect((await raw('/', { host: 'attacker.example:80' })).status).toBe(403);
    expect((await raw('/jobs/no-such-job', {})).status).toBe(404);
    // The dashboard's identity is an observer: it reads report.json, never the merged weights.
    const auditor = connectFederation({ address: coordinator.address, tls: clientTls('auditor') });
    expect((await auditor.download('demo', 'report.json')).byteLength).toBeGreaterThan(0);
    const refused = (await auditor.download('demo', 'merged.onnx').catch((e: unknown) => e)) as GramfuseError;
    auditor.close();
    expect(refused.code).toBe(ErrorCode.NotAuthorized);
  });
});
