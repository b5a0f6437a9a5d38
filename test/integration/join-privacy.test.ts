// Issue 37 item 11: only what the approved plan lists leaves an owner. A real federated job (an mTLS coordinator on
// loopback, two agents running the whole flow) with every local path made distinctive: the model, data and tokenizer
// copied under owner-private directories, and each agent's work dir. After the job, no byte of the coordinator's
// whole state directory (manifests, statistics, ledger, report, merged model) holds any of those paths, and what it
// kept of each owner's join is exactly the plan.
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { runAgent } from '../../agent/index.js';
import { connectFederation } from '../../client/index.js';
import { exampleAgent } from '../helpers/agent-options.js';
import { EXAMPLE_DATA, exampleModel, EXAMPLE_TOKENIZER } from '../helpers/examples.js';
import { type MtlsCoordinator, startMtlsCoordinator } from '../helpers/mtls-coordinator.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-join-privacy-'));
const orgs = ['org0', 'org1'];
const state = join(work, 'coordinator-state');
let federation: MtlsCoordinator;

/** Each owner's files under a directory only that owner has: the strings that must never reach the coordinator. */
const local = (org: string) => {
  const dir = join(work, `private-${org}-c0ffee`);
  return {
    dir,
    model: join(dir, `secret-model-${org}.onnx`),
    data: join(dir, `secret-data-${org}.jsonl`),
    tokenizer: join(dir, `secret-tokenizer-${org}.json`),
    workDir: join(dir, `secret-work-${org}`),
  };
};

beforeAll(async () => {
  for (const org of orgs) {
    const l = local(org);
    mkdirSync(l.dir);
    copyFileSync(exampleModel(org), l.model);
    copyFileSync(EXAMPLE_DATA(org), l.data);
    copyFileSync(EXAMPLE_TOKENIZER, l.tokenizer);
  }
  federation = await startMtlsCoordinator('join privacy CA', orgs, { stateDir: state, templateDirs: [work] });
}, 60_000);
afterAll(async () => {
  await federation?.server.close();
  rmSync(work, { recursive: true, force: true });
});

describe('what leaves an owner at join', () => {
  it("a federated job leaves none of the agents' local paths anywhere in the coordinator's state", { timeout: 300_000 }, async () => {
    const creator = connectFederation({ address: federation.address, tls: federation.tlsOf('creator') });
    try {
      await creator.createJob(
        JSON.stringify({ id: 'private', participants: orgs, policy: { minRowsPerGroup: 16 } }),
        readFileSync(exampleModel('org0')),
      );
      await Promise.all(
        orgs.map((org) => {
          const l = local(org);
          return runAgent(
            exampleAgent(org, { address: federation.address, tls: federation.tlsOf(org) }, 'private', l.workDir, {
              model: l.model,
              data: l.data,
              tokenizer: l.tokenizer,
            }),
          );
        }),
      );
      const final = await creator.watch('private', () => undefined);
      expect(final.state, final.failureMessage).toBe('done');
    } finally {
      creator.close();
    }

    const files = readdirSync(state, { withFileTypes: true, recursive: true })
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name));
    expect(files.length).toBeGreaterThan(10);
    // Every path, and the distinctive part of each (a path could be sent relative, or as a file name).
    const needles = orgs.flatMap((org) => {
      const l = local(org);
      return [
        l.dir,
        l.model,
        l.data,
        l.tokenizer,
        l.workDir,
        `private-${org}-c0ffee`,
        `secret-model-${org}`,
        `secret-data-${org}`,
        `secret-tokenizer-${org}`,
        `secret-work-${org}`,
      ];
    });
    const found: string[] = [];
    for (const file of files) {
      const text = readFileSync(file).toString('latin1');
      for (const needle of needles) if (text.includes(needle)) found.push(`${file.slice(state.length)}: ${needle}`);
    }
    expect(found).toEqual([]);

    // What the coordinator kept of each join is the approved plan, nothing beside it.
    for (const org of orgs) {
      const manifest = JSON.parse(readFileSync(join(state, 'jobs', 'private', 'owners', org, 'manifest.json'), 'utf8')) as Record<
        string,
        unknown
      >;
      expect(Object.keys(manifest)).toEqual(['plan']);
      expect((manifest.plan as { owner: string }).owner).toBe(org);
    }
  });
});
