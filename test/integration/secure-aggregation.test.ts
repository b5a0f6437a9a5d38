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
import { type CertificateBundle, createCertificateAuthority, issueCertificate } from '../../shared/security/index.js';
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
          /SECURE_AGGREGATION: job lowt: the round's threshold 1 is not the job's 2 or not a majority of its 3 owners; no share was sent/,
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
        // only its own signature covers that request, fewer than t = 2.
        expect(results[0]!.code).not.toBe(0);
        expect(results[0]!.stderr).toMatch(
          /SECURE_AGGREGATION: job split: the unmasking request is refused: only 1 survivor\(s\) signed the request this owner was shown, fewer than the threshold 2/,
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
