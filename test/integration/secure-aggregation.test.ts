// Secure aggregation end to end (issue #18): a real mTLS coordinator and real agent processes (`gramfuse agent run`)
// on the example models, each owner's statistics masked in Z/2⁶⁴. Checked against the plaintext merge of the same
// owners' own bundles (`gramfuse merge --bundle`, the one pipeline), with dropouts, and against a coordinator that
// misbehaves (GRAMFUSE_FAULT): every agent must refuse it.
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runAgent as runInProcess } from '../../agent/index.js';
import { certsFlags } from '../../cli/index.js';
import { connectFederation } from '../../client/index.js';
import { type CoordinatorServer, startCoordinatorServer } from '../../coordinator/index.js';
import { startDashboard } from '../../dashboard/index.js';
import { ErrorCode, type GramfuseError } from '../../shared/index.js';
import { statisticFile } from '../../shared/federation/index.js';
import { BUNDLE_TENSORS, readSafetensorsHeader } from '../../shared/merge/index.js';
import { loadModel, readParameterValues } from '../../shared/onnx/index.js';
import { type CertificateBundle, certificateRole, createCertificateAuthority, issueCertificate } from '../../shared/security/index.js';
import { runCli } from '../helpers/cli.js';
import { exampleAgent } from '../helpers/agent-options.js';
import { CoordinatorProcess } from '../helpers/coordinator-process.js';
import { EXAMPLE_DATA, EXAMPLE_HELDOUT, exampleModel, EXAMPLE_TOKENIZER } from '../helpers/examples.js';
import { freePort } from '../helpers/nats-server.js';

let work = '';
let ca: CertificateBundle;
const OWNERS = ['owner0', 'owner1', 'owner2', 'owner3', 'owner4'];
// Five owners from the three example models: the last two fine-tuned like org0/org1 but with other private data.
const SOURCES: Record<string, { model: string; data: string }> = {
  owner0: { model: exampleModel('org0'), data: EXAMPLE_DATA('org0') },
  owner1: { model: exampleModel('org1'), data: EXAMPLE_DATA('org1') },
  owner2: { model: exampleModel('org2'), data: EXAMPLE_DATA('org2') },
  owner3: { model: exampleModel('org0'), data: EXAMPLE_HELDOUT('org1') },
  owner4: { model: exampleModel('org1'), data: EXAMPLE_HELDOUT('org2') },
};

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'gramfuse-secure-'));
  ca = await createCertificateAuthority('secure aggregation test CA');
  writeFileSync(join(work, 'ca.pem'), ca.certPem);
  for (const name of ['coordinator', 'creator', 'auditor', ...OWNERS]) {
    const cert = await issueCertificate(ca, name, name === 'coordinator' ? { hosts: ['localhost', '127.0.0.1'] } : {});
    writeFileSync(join(work, `${name}.pem`), cert.certPem);
    writeFileSync(join(work, `${name}-key.pem`), cert.keyPem, { mode: 0o600 });
  }
});
afterAll(async () => rm(work, { recursive: true, force: true }));

const tls = (name: string) => ({
  caPem: ca.certPem,
  certPem: readFileSync(join(work, `${name}.pem`), 'utf8'),
  keyPem: readFileSync(join(work, `${name}-key.pem`), 'utf8'),
});
const tlsArgs = (name: string): string[] => certsFlags(work, name);

async function createJob(address: string, id: string, participants: readonly string[], privacy: Record<string, unknown>): Promise<void> {
  const client = connectFederation({ address, tls: tls('creator') });
  await client.createJob(
    JSON.stringify({ id, participants, privacy: { secureAggregation: true, ...privacy } }),
    readFileSync(exampleModel('org0')),
  );
  client.close();
}

const runAgent = (owner: string, address: string, job: string, env: NodeJS.ProcessEnv = {}) =>
  runCli(
    [
      'agent',
      'run',
      '--coordinator',
      address,
      '--job',
      job,
      '--model',
      SOURCES[owner]!.model,
      '--data',
      SOURCES[owner]!.data,
      '--tokenizer',
      EXAMPLE_TOKENIZER,
      '--max-examples',
      '300',
      '--work-dir',
      join(work, 'agents', owner),
      '--yes',
      '--json',
      '--threads',
      '1',
      ...tlsArgs(owner),
    ],
    { env },
  );

const bundleOf = (owner: string, job: string): string => join(work, 'agents', owner, job, 'bundle');

/** Every statistic of an owner's plaintext bundle, as float64. */
async function plaintext(owner: string, job: string): Promise<Map<string, Float64Array>> {
  const path = join(bundleOf(owner, job), BUNDLE_TENSORS);
  const { entries } = await readSafetensorsHeader(path, (reason) => new Error(reason));
  const bytes = readFileSync(path);
  const out = new Map<string, Float64Array>();
  for (const [id, e] of entries) {
    const slice = bytes.subarray(e.begin, e.end);
    const copy = new Uint8Array(slice);
    out.set(id, e.dtype === 'F32' ? Float64Array.from(new Float32Array(copy.buffer)) : new Float64Array(copy.buffer));
  }
  return out;
}

/** The plaintext merge of the owners' own bundles (what a plaintext job over the same statistics gives). */
async function plaintextMerge(owners: readonly string[], job: string): Promise<string> {
  const out = join(work, `${job}-plaintext.onnx`);
  const merged = await runCli([
    'merge',
    ...owners.flatMap((o) => ['--bundle', bundleOf(o, job)]),
    '--template',
    exampleModel('org0'),
    '--out',
    out,
  ]);
  expect(merged.code, merged.stderr).toBe(0);
  return out;
}

async function downloadMerged(address: string, job: string): Promise<{ model: string; report: Record<string, unknown> }> {
  const client = connectFederation({ address, tls: tls('creator') });
  const final = await client.watch(job, () => undefined);
  expect(final.state, final.failureMessage).toBe('done');
  const model = join(work, `${job}-secure.onnx`);
  writeFileSync(model, await client.download(job, 'merged.onnx'));
  const report = JSON.parse((await client.download(job, 'report.json')).toString('utf8')) as Record<string, unknown>;
  client.close();
  return { model, report };
}

/**
 * Each merged parameter against the plaintext merge: the float64 sums agree to ≤ 1e-9 relative (checked on the sums
 * themselves), so the float32 parameters can differ at most where a float64 value lies within that of a rounding
 * boundary: by one float32 step (2⁻²³ relative) in a handful of values.
 */
async function compareModels(secureModel: string, plainModel: string): Promise<{ parameters: number; values: number; oneUlp: number }> {
  const a = await loadModel(secureModel);
  const b = await loadModel(plainModel);
  let oneUlp = 0;
  let parameters = 0;
  let values = 0;
  for (const t of b.proto.graph!.initializer.filter((x) => x.dataType === 1)) {
    const x = readParameterValues(a, t.name!);
    const y = readParameterValues(b, t.name!);
    parameters++;
    values += y.length;
    for (let i = 0; i < y.length; i++) {
      const d = Math.abs(x[i]! - y[i]!);
      if (d === 0) continue;
      expect(d, `${t.name}[${i}]`).toBeLessThanOrEqual(Math.abs(y[i]!) * 2 ** -23 * 1.0001);
      oneUlp++;
    }
  }
  return { parameters, values, oneUlp };
}

/** max |secure − Σ plaintext| / max |Σ plaintext| over every statistic of the secure sum. */
async function sumDifference(state: string, job: string, owners: readonly string[]): Promise<number> {
  const plain = await Promise.all(owners.map((o) => plaintext(o, job)));
  let worst = 0;
  for (const id of plain[0]!.keys()) {
    const bytes = new Uint8Array(readFileSync(join(state, 'jobs', job, 'secure', 'sum', `${statisticFile(id)}.bin`)));
    const secure = new Float64Array(bytes.buffer);
    let maxAbs = 0;
    let maxDiff = 0;
    for (let i = 0; i < secure.length; i++) {
      const sum = plain.reduce((acc, p) => acc + p.get(id)![i]!, 0);
      maxAbs = Math.max(maxAbs, Math.abs(sum));
      maxDiff = Math.max(maxDiff, Math.abs(secure[i]! - sum));
    }
    worst = Math.max(worst, maxAbs === 0 ? maxDiff : maxDiff / maxAbs);
  }
  return worst;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? filesUnder(path) : [path];
  });
}

/** The kinds of the records an owner's ledger holds for a job. */
const ledgerKinds = (owner: string, job: string): string[] =>
  readFileSync(join(work, 'agents', owner, 'audit.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { job: string; kind: string })
    .filter((r) => r.job === job)
    .map((r) => r.kind);

/** The coordinator's secure-round state of a job (what it was sent: shares, confirmations, reveals). */
interface SavedRounds {
  shares: Record<string, unknown>;
  reveals: Record<string, { owner: string; kind: string }[]>;
}
const secureState = (stateDir: string, job: string): SavedRounds =>
  JSON.parse(readFileSync(join(stateDir, 'jobs', job, 'secure', 'state.json'), 'utf8')) as SavedRounds;

/** Asserts that no 8-value probe of any Gram statistic of `owner`'s plaintext lies anywhere under `stateDir`. */
async function plaintextNowhere(stateDir: string, owner: string, job: string): Promise<void> {
  const stored = filesUnder(stateDir).map((path) => ({ path, bytes: readFileSync(path) }));
  let probes = 0;
  for (const [id, values] of await plaintext(owner, job)) {
    if (!id.startsWith('gram') || values.length < 200) continue;
    const probe = Buffer.from(values.buffer, values.byteOffset + 800, 64);
    probes++;
    for (const { path, bytes } of stored) expect(bytes.indexOf(probe), `${owner}'s ${id} found in ${path}`).toBe(-1);
  }
  expect(probes).toBeGreaterThan(0);
}

function correlation(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const n = x.length;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i]! / n;
    my += y[i]! / n;
  }
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i]! - mx) * (y[i]! - my);
    sxx += (x[i]! - mx) ** 2;
    syy += (y[i]! - my) ** 2;
  }
  return sxx === 0 || syy === 0 ? 0 : sxy / Math.sqrt(sxx * syy);
}

describe('secure aggregation over gRPC with mTLS and agent processes', () => {
  let server: CoordinatorServer;
  let address = '';
  const state = (): string => join(work, 'state');
  beforeAll(async () => {
    server = await startCoordinatorServer({
      stateDir: state(),
      listen: '127.0.0.1:0',
      tls: tls('coordinator'),
      creators: ['creator'],
      observers: ['auditor'],
    });
    address = `localhost:${server.port}`;
  });
  afterAll(async () => server.close());

  it(
    '5 owners: the merged model equals the plaintext merge within the fixed-point resolution; the coordinator holds no owner’s statistics',
    { timeout: 300_000 },
    async () => {
      await createJob(address, 'sec5', OWNERS, { threshold: 3, roundTimeoutSeconds: 60 });
      const results = await Promise.all(OWNERS.map((o) => runAgent(o, address, 'sec5')));
      for (const r of results) expect(r.code, r.stderr).toBe(0);
      const summary = JSON.parse(results[0]!.stdout) as { secureAggregation?: { maxResolution: number }; receipts: number };
      expect(summary.secureAggregation?.maxResolution).toBeLessThan(1e-12);
      const { model, report } = await downloadMerged(address, 'sec5');
      // The report says the figures are totals: per-owner diagnostics do not exist in this mode.
      expect(report.privacy).toMatchObject({ secureAggregation: true, owners: OWNERS });
      expect(report.owners).toHaveLength(1);

      // Measured here: 2e-16 relative on the sums, 2 of 1.4 M float32 values one step apart.
      expect(await sumDifference(state(), 'sec5', OWNERS)).toBeLessThanOrEqual(1e-9);
      const compared = await compareModels(model, await plaintextMerge(OWNERS, 'sec5'));
      expect(compared.parameters).toBeGreaterThan(20);
      expect(compared.oneUlp).toBeLessThanOrEqual(1e-5 * compared.values);

      // Privacy: what the coordinator stored of each owner (masked statistics, chunks) is uncorrelated with the owner's
      // plaintext, and no plaintext statistic's bytes appear anywhere in its state directory.
      const stored = filesUnder(state());
      for (const owner of OWNERS) {
        const plain = await plaintext(owner, 'sec5');
        for (const [id, values] of plain) {
          if (values.length < 2000) continue;
          const file = join(state(), 'jobs', 'sec5', 'owners', owner, 'committed', `${statisticFile(id)}.bin`);
          const raw = new Uint8Array(readFileSync(file));
          expect(raw.byteLength).toBe(values.length * 8);
          const asSigned = Array.from(new BigInt64Array(raw.buffer), Number);
          expect(Math.abs(correlation(values, asSigned)), `${owner} ${id}`).toBeLessThan(0.05);
          // Data-derived statistics only: an averaged parameter's plaintext is the owner's own weights, which the template
          // (owner0's model here) and the merged model legitimately share where no owner changed them.
          if (!id.startsWith('gram')) continue;
          const probe = Buffer.from(values.buffer, values.byteOffset + 800, 64); // 8 values from inside the statistic
          for (const path of stored) expect(readFileSync(path).indexOf(probe), `${owner}'s ${id} found in ${path}`).toBe(-1);
        }
      }

      // Once the sum was unmasked every agent deleted its private keys, seed, received shares and masked bundle, and its
      // ledger says so (issue 37, item 5).
      for (const owner of OWNERS) {
        const jobDir = join(work, 'agents', owner, 'sec5');
        const [stateFile] = readdirSync(join(jobDir, 'secure'));
        const saved = JSON.parse(readFileSync(join(jobDir, 'secure', stateFile!), 'utf8')) as Record<string, unknown>;
        expect(saved.secrets, owner).toBeUndefined();
        expect(saved.received).toEqual({});
        expect(saved.erased).toMatch(/summed|done/);
        expect(readdirSync(jobDir).filter((n) => n.startsWith('masked'))).toEqual([]);
        const erased = ledgerKinds(owner, 'sec5');
        expect(erased).toContain('secure.erased');
      }

      // Both ledgers verify; the coordinator's says the job was securely aggregated and by whom.
      for (const ledger of [join(state(), 'audit.jsonl'), join(work, 'agents', 'owner0', 'audit.jsonl')]) {
        const verified = await runCli(['audit', 'verify', '--ledger', ledger]);
        expect(verified.code, verified.stderr).toBe(0);
      }
      const audit = await runCli(['audit', 'report', '--ledger', join(state(), 'audit.jsonl'), '--owner', 'owner1', '--json']);
      expect(audit.code, audit.stderr).toBe(0);
      expect(JSON.parse(audit.stdout).jobs[0]).toMatchObject({ job: 'sec5', securelyAggregated: true });
      const reconciled = await runCli([
        'audit',
        'reconcile',
        '--agent-ledger',
        join(work, 'agents', 'owner1', 'audit.jsonl'),
        '--coordinator-ledger',
        join(state(), 'audit.jsonl'),
        '--json',
      ]);
      expect(reconciled.code, reconciled.stderr).toBe(0);
      expect(JSON.parse(reconciled.stdout)).toMatchObject({ owner: 'owner1', agree: true });

      // The dashboard's job page says the job was securely aggregated (an observer reads its status and report).
      const dashboard = await startDashboard({
        coordinator: { address, tls: tls('auditor') },
        ledgers: [join(state(), 'audit.jsonl')],
        listen: '127.0.0.1:0',
      });
      try {
        const page = await (await fetch(`${dashboard.url}jobs/sec5`)).text();
        expect(page).toContain('data-secure="true"');
        expect(page).toMatch(/Secure aggregation: every statistic below left its owner masked/);
      } finally {
        await dashboard.close();
      }
    },
  );

  it(
    'the owner is told before it approves that its statistics leave masked, and over how many owners the sum is',
    { timeout: 60_000 },
    async () => {
      await createJob(address, 'consent', OWNERS, { threshold: 3, minOwners: 4 });
      let asked = '';
      // owner0's model and data are the example org0's; the owner declines, so nothing is computed or sent.
      const refused = await runInProcess(
        exampleAgent('org0', { address, tls: tls('owner0') }, 'consent', join(work, 'consent'), {
          yes: false,
          approve: (text) => {
            asked = text;
            return Promise.resolve(false);
          },
        }),
      ).catch((error: unknown) => error as GramfuseError);
      expect((refused as GramfuseError).code).toBe(ErrorCode.NotAuthorized);
      expect(asked).toMatch(/, masked \(secure aggregation: the coordinator sees only the sum over at least 4 owners;/);
      // The participants by name (not a count): the keys go to these owners only, whatever the coordinator says later.
      expect(asked).toMatch(
        /the keys are shared only with owner0, owner1, owner2, owner3, owner4, threshold 3, which withstands 0 owner\(s\) colluding/,
      );
    },
  );

  it(
    'dropouts: one owner gone after key setup, one after uploading (2 of 5): the job completes and equals the plaintext merge of the 4 that uploaded',
    { timeout: 300_000 },
    async () => {
      await createJob(address, 'drop5', OWNERS, { threshold: 3, roundTimeoutSeconds: 4 });
      const results = await Promise.all(
        OWNERS.map((o) =>
          runAgent(
            o,
            address,
            'drop5',
            o === 'owner3' ? { GRAMFUSE_FAILPOINT: 'secure.shared:1' } : o === 'owner4' ? { GRAMFUSE_FAILPOINT: 'secure.uploaded:1' } : {},
          ),
        ),
      );
      for (const [i, r] of results.entries()) {
        if (i < 3) expect(r.code, r.stderr).toBe(0);
        else expect(r.stderr).toMatch(/failpoint secure\.(shared|uploaded):1: killing process/);
      }
      const { model, report } = await downloadMerged(address, 'drop5');
      const uploaded = ['owner0', 'owner1', 'owner2', 'owner4'];
      expect(report.privacy).toMatchObject({ secureAggregation: true, owners: uploaded });
      expect(await sumDifference(state(), 'drop5', uploaded)).toBeLessThanOrEqual(1e-9);
      const compared = await compareModels(model, await plaintextMerge(uploaded, 'drop5'));
      expect(compared.oneUlp).toBeLessThanOrEqual(1e-5 * compared.values);
    },
  );
});

describe('secure aggregation against a misbehaving coordinator', () => {
  const three = OWNERS.slice(0, 3);
  const misbehaving = async (fault: string, job: string): Promise<Awaited<ReturnType<typeof runAgent>>[]> => {
    const coordinator = new CoordinatorProcess(await freePort(), join(work, `state-${fault}`), tlsArgs('coordinator'));
    await coordinator.start(undefined, [], { GRAMFUSE_FAULT: fault });
    try {
      await createJob(coordinator.address, job, three, { threshold: 2, roundTimeoutSeconds: 60 });
      return await Promise.all(three.map((o) => runAgent(o, coordinator.address, job)));
    } finally {
      await coordinator.kill();
    }
  };

  it('a request for both kinds of share of one owner is refused by every agent, with nothing revealed', { timeout: 300_000 }, async () => {
    const results = await misbehaving('secure.ask-both', 'both');
    for (const r of results) {
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(
        /SECURE_AGGREGATION: job both: the unmasking request is refused: it asks for both the self-mask and the mask-key shares of owner0/,
      );
    }
    for (const owner of three) {
      const kinds = readFileSync(join(work, 'agents', owner, 'audit.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { job: string; kind: string })
        .filter((r) => r.job === 'both')
        .map((r) => r.kind);
      expect(kinds).toContain('secure.masked');
      expect(kinds).not.toContain('secure.revealed');
    }
  });

  it(
    'a key the coordinator substituted for an owner’s is refused by every agent before anything is masked',
    { timeout: 300_000 },
    async () => {
      const results = await misbehaving('secure.substitute-key', 'forged');
      for (const r of results) {
        expect(r.code).not.toBe(0);
        expect(r.stderr).toMatch(
          /SECURE_AGGREGATION: job forged: the keys advertised for owner0 are refused: the signature does not verify with owner0's certificate/,
        );
      }
    },
  );

  it(
    'a threshold other than the job’s (t = 1: one share would give a secret away) is refused before any share is sent',
    { timeout: 300_000 },
    async () => {
      const results = await misbehaving('secure.low-threshold', 'lowt');
      for (const r of results) {
        expect(r.code).not.toBe(0);
        expect(r.stderr).toMatch(
          /SECURE_AGGREGATION: job lowt: the round's threshold 1 is not the job's 2 or not a majority of its 3 owners \(at least 3 needed\); no share was sent/,
        );
      }
    },
  );

  it(
    'a coordinator that shows one owner another unmasking request is stopped by the consistency round: that owner reveals nothing',
    { timeout: 300_000 },
    async () => {
      const coordinator = new CoordinatorProcess(await freePort(), join(work, 'state-split'), tlsArgs('coordinator'));
      await coordinator.start(undefined, [], { GRAMFUSE_FAULT: 'secure.split-view' });
      try {
        await createJob(coordinator.address, 'split', three, { threshold: 2, roundTimeoutSeconds: 3 });
        const results = await Promise.all(three.map((o) => runAgent(o, coordinator.address, 'split')));
        // owner0 was shown "owner2 dropped" (so it would reveal owner2's mask key while the others reveal its self mask):
        // 2 survivors are fewer than the 3 it approved (minOwners), and only its own signature would cover that request.
        expect(results[0]!.code).not.toBe(0);
        expect(results[0]!.stderr).toMatch(
          /SECURE_AGGREGATION: job split: the unmasking request is refused: only 2 survivors, fewer than the 3 this owner approved \(threshold 2, minOwners 3\); nothing was revealed/,
        );
        // The other two saw the same request, signed by both: they reveal, and t = 2 reveals unmask the sum.
        for (const r of results.slice(1)) expect(r.code, r.stderr).toBe(0);
        const client = connectFederation({ address: coordinator.address, tls: tls('creator') });
        const final = await client.watch('split', () => undefined);
        client.close();
        expect(final.state, final.failureMessage).toBe('done');
      } finally {
        await coordinator.kill();
      }
    },
  );

  it('a coordinator killed (SIGKILL) right after the sum is unmasked restarts and finishes the job', { timeout: 300_000 }, async () => {
    const coordinator = new CoordinatorProcess(await freePort(), join(work, 'state-restart'), tlsArgs('coordinator'));
    // Round closes: sharing, uploading, confirming, unmasking, summed — the 5th is the sum on disk before its solve started.
    await coordinator.start('secure.closed:5');
    try {
      await createJob(coordinator.address, 'restart', three, { threshold: 2, roundTimeoutSeconds: 60 });
      const agents = Promise.all(three.map((o) => runAgent(o, coordinator.address, 'restart')));
      await coordinator.waitExit();
      expect(coordinator.exits).toEqual(['SIGKILL']);
      // Restarted at once: the agent whose reveal lost its reply retries it (idempotent) against the new process.
      await coordinator.start();
      for (const r of await agents) expect(r.code, r.stderr).toBe(0);
      const client = connectFederation({ address: coordinator.address, tls: tls('creator') });
      const final = await client.watch('restart', () => undefined);
      client.close();
      expect(final.state, final.failureMessage).toBe('done');
    } finally {
      await coordinator.kill();
    }
  });
});

// Issue 37: a malicious coordinator (GRAMFUSE_FAULT) that really attempts each attack on real agent processes. Each test
// asserts the refusal, that no Reveal (or share) carrying the victim's secrets reached the coordinator, and that the
// victim's plaintext is nowhere in the coordinator's state directory.
describe('certificate roles (issue 37)', () => {
  it(
    '`gramfuse certs issue` writes the role: owner by default, server with --host, or the one --role names',
    { timeout: 60_000 },
    async () => {
      const dir = join(work, 'role-certs');
      expect((await runCli(['certs', 'init', '--dir', dir])).code).toBe(0);
      const issue = (args: string[]) => runCli(['certs', 'issue', '--dir', dir, ...args]);
      expect((await issue(['--name', 'org-a'])).code).toBe(0);
      expect((await issue(['--name', 'coord', '--host', 'localhost'])).code).toBe(0);
      expect((await issue(['--name', 'watcher', '--role', 'observer'])).code).toBe(0);
      const role = (name: string) => certificateRole(readFileSync(join(dir, `${name}.pem`), 'utf8'));
      expect([role('org-a'), role('coord'), role('watcher')]).toEqual(['owner', 'server', 'observer']);
      const bad = await issue(['--name', 'x', '--role', 'admin']);
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/INVALID_ARGUMENT: .*role/);
    },
  );
});

describe('secure aggregation against a malicious coordinator (issue 37)', () => {
  const three = OWNERS.slice(0, 3);
  const attack = async (
    fault: string,
    job: string,
    privacy: Record<string, unknown>,
    env: NodeJS.ProcessEnv = {},
    agentEnv: (owner: string) => NodeJS.ProcessEnv = () => ({}),
  ): Promise<{ results: Awaited<ReturnType<typeof runAgent>>[]; stateDir: string; final: string }> => {
    const stateDir = join(work, `state-${job}`);
    const coordinator = new CoordinatorProcess(await freePort(), stateDir, tlsArgs('coordinator'));
    await coordinator.start(undefined, [], fault === '' ? env : { GRAMFUSE_FAULT: fault, ...env });
    try {
      await createJob(coordinator.address, job, three, privacy);
      const results = await Promise.all(three.map((o) => runAgent(o, coordinator.address, job, agentEnv(o))));
      const client = connectFederation({ address: coordinator.address, tls: tls('creator') });
      // A job the agents completed is followed to its end (the solve); a refused one stays collecting.
      const status = results.every((r) => r.code === 0) ? await client.watch(job, () => undefined) : await client.getJob(job);
      client.close();
      return { results, stateDir, final: status.state };
    } finally {
      await coordinator.kill();
    }
  };

  it(
    'late threshold: honest until the uploads, then t = 1 with survivors = [owner0]: every agent refuses with the t and minOwners it approved; no Reveal reaches the coordinator',
    { timeout: 300_000 },
    async () => {
      const { results, stateDir } = await attack('secure.late-threshold', 'late', { threshold: 2, roundTimeoutSeconds: 60 });
      // The victim: one survivor is fewer than the max(t, minOwners) = 3 it approved (the round's t = 1 is ignored).
      expect(results[0]!.code).not.toBe(0);
      expect(results[0]!.stderr).toMatch(
        /SECURE_AGGREGATION: job late: the unmasking request is refused: only 1 survivors, fewer than the 3 this owner approved \(threshold 2, minOwners 3\); nothing was revealed/,
      );
      // The others are named dropped although they uploaded: their mask-key shares would unmask them.
      for (const [i, r] of results.slice(1).entries()) {
        expect(r.code).not.toBe(0);
        expect(r.stderr).toMatch(
          new RegExp(`the unmasking request is refused: it names owner${i + 1} dropped, but owner${i + 1} uploaded`),
        );
      }
      const secure = secureState(stateDir, 'late');
      expect(secure.reveals).toEqual({});
      for (const owner of three) expect(ledgerKinds(owner, 'late')).not.toContain('secure.revealed');
      await plaintextNowhere(stateDir, 'owner0', 'late');
    },
  );

  it(
    'sybil: the coordinator joins the key round as an owner with its own TLS server certificate: every agent refuses before sending any share',
    { timeout: 300_000 },
    async () => {
      const { results, stateDir } = await attack(
        'secure.sybil',
        'sybil',
        { threshold: 3, roundTimeoutSeconds: 3 },
        { GRAMFUSE_FAULT_SYBIL_CERT: join(work, 'coordinator.pem'), GRAMFUSE_FAULT_SYBIL_KEY: join(work, 'coordinator-key.pem') },
      );
      for (const r of results) {
        expect(r.code).not.toBe(0);
        expect(r.stderr).toMatch(
          /SECURE_AGGREGATION: the certificate relayed for coordinator is refused: it is the coordinator’s own TLS server certificate \(or its key\): the coordinator cannot be a peer; no share was sent/,
        );
      }
      // No sealed share (which the sybil could open) and nothing else reached the coordinator.
      const secure = secureState(stateDir, 'sybil');
      expect(secure.shares).toEqual({});
      expect(secure.reveals).toEqual({});
      await plaintextNowhere(stateDir, 'owner0', 'sybil');
    },
  );

  it(
    'split view with one colluder (n = 3, default t): owner1 is shown "owner0 dropped", owner0 "owner1 dropped", the colluder owner2 signs both: no owner reveals',
    { timeout: 300_000 },
    async () => {
      const { results, stateDir } = await attack(
        'secure.split-collude',
        'collude',
        { roundTimeoutSeconds: 60 },
        { GRAMFUSE_FAULT_COLLUDER: 'owner2', GRAMFUSE_FAULT_COLLUDER_KEY: join(work, 'owner2-key.pem') },
      );
      // With one colluder, t = 2 of 3 falls (k ≥ 2t − n): the default t is now 3 (2t > n + k, k = 1), and no request with
      // a dropped owner has the survivors the owners approved.
      for (const r of results.slice(0, 2)) {
        expect(r.code).not.toBe(0);
        expect(r.stderr).toMatch(
          /SECURE_AGGREGATION: job collude: the unmasking request is refused: only 2 survivors, fewer than the 3 this owner approved/,
        );
      }
      const secure = secureState(stateDir, 'collude');
      const leaked = Object.values(secure.reveals)
        .flat()
        .filter((s) => s.owner === 'owner0');
      expect(leaked).toEqual([]);
      await plaintextNowhere(stateDir, 'owner0', 'collude');
    },
  );

  it(
    'one signature per job, across a restart: owner0 signs, is killed, and the coordinator shows the restarted agent another request (owner3 dropped): it refuses',
    { timeout: 480_000 },
    async () => {
      const four = OWNERS.slice(0, 4);
      const stateDir = join(work, 'state-resign');
      const coordinator = new CoordinatorProcess(await freePort(), stateDir, tlsArgs('coordinator'));
      await coordinator.start(undefined, [], { GRAMFUSE_FAULT: 'secure.resign' });
      try {
        await createJob(coordinator.address, 'resign', four, { threshold: 3, roundTimeoutSeconds: 60 });
        const others = Promise.all(four.slice(1).map((o) => runAgent(o, coordinator.address, 'resign')));
        const first = await runAgent('owner0', coordinator.address, 'resign', { GRAMFUSE_FAILPOINT: 'secure.confirmed:1' });
        expect(first.stderr).toMatch(/failpoint secure\.confirmed:1: killing process/);
        const again = await runAgent('owner0', coordinator.address, 'resign');
        expect(again.code).not.toBe(0);
        expect(again.stderr).toMatch(
          /SECURE_AGGREGATION: job resign: the unmasking request is refused: this owner already signed another one for this job \(survivors owner0, owner1, owner2, owner3; dropped none\) and signs one per job; nothing was revealed/,
        );
        expect(ledgerKinds('owner0', 'resign')).not.toContain('secure.revealed');
        // The others wait for a round that cannot close; once the coordinator is gone they give up (after the agent's
        // restart patience, 120 s).
        await coordinator.kill();
        await others;
        expect(secureState(stateDir, 'resign').reveals).toEqual({});
        await plaintextNowhere(stateDir, 'owner0', 'resign');
      } finally {
        await coordinator.kill();
      }
    },
  );

  it(
    'approved terms survive a restart: owner0 is killed after sharing, and the coordinator then names itself a participant: the rerun refuses',
    { timeout: 480_000 },
    async () => {
      const stateDir = join(work, 'state-terms');
      const coordinator = new CoordinatorProcess(await freePort(), stateDir, tlsArgs('coordinator'));
      await coordinator.start(undefined, [], { GRAMFUSE_FAULT: 'secure.terms-change' });
      try {
        await createJob(coordinator.address, 'terms', three, { threshold: 2, roundTimeoutSeconds: 60 });
        const others = Promise.all(three.slice(1).map((o) => runAgent(o, coordinator.address, 'terms')));
        const first = await runAgent('owner0', coordinator.address, 'terms', { GRAMFUSE_FAILPOINT: 'secure.shared:1' });
        expect(first.stderr).toMatch(/failpoint secure\.shared:1: killing process/);
        // Wait until another owner completed (the coordinator lies from then on), then rerun owner0.
        const client = connectFederation({ address: coordinator.address, tls: tls('creator') });
        for (let i = 0; i < 600 && (await client.getJob('terms')).completed.length === 0; i++) await new Promise((r) => setTimeout(r, 200));
        client.close();
        const again = await runAgent('owner0', coordinator.address, 'terms');
        expect(again.code).not.toBe(0);
        expect(again.stderr).toMatch(
          /SECURE_AGGREGATION: job terms: the coordinator now reports other secure-aggregation terms \(threshold 2, minOwners 3, participants coordinator, owner0, owner1, owner2\) than this owner approved \(threshold 2, minOwners 3, participants owner0, owner1, owner2\); nothing was sent/,
        );
        await coordinator.kill();
        await others;
        expect(secureState(stateDir, 'terms').reveals).toEqual({});
        await plaintextNowhere(stateDir, 'owner0', 'terms');
      } finally {
        await coordinator.kill();
      }
    },
  );

  it(
    'a poisoned seed share (owner1 deals owner0 a wrong one) and a garbage sealed share (the relay garbles owner2’s to owner0): the sum is still exact, the wrong share named, nobody aborts',
    { timeout: 300_000 },
    async () => {
      const { results, stateDir, final } = await attack(
        'secure.garbage-share',
        'poison',
        { threshold: 2, roundTimeoutSeconds: 60 },
        {},
        (o) => (o === 'owner1' ? { GRAMFUSE_FAULT: 'secure.poison-seed-share' } : {}),
      );
      for (const r of results) expect(r.code, r.stderr).toBe(0);
      expect(final).toBe('done');
      // owner0 dropped owner2's unopenable share and said so when it revealed; the coordinator found owner0's wrong share
      // of owner1's seed against owner1's commitment and left it out.
      expect(secureState(stateDir, 'poison').reveals.owner0!.some((s) => s.owner === 'owner2')).toBe(false);
      const coordinatorLedger = readFileSync(join(stateDir, 'audit.jsonl'), 'utf8');
      expect(coordinatorLedger).toMatch(/"kind":"secure\.inconsistent-shares"/);
      expect(coordinatorLedger).toMatch(/"owner":"owner1","responders":\["owner0"\]/);
      expect(await sumDifference(stateDir, 'poison', three)).toBeLessThanOrEqual(1e-9);
    },
  );
});
