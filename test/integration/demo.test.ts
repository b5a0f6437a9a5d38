import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { readHfCheckpoint } from '../../shared/merge/index.js';
import { runCli } from '../helpers/cli.js';
import { EXAMPLE_TOKENIZER } from '../helpers/examples.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-demo-test-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const records = (path: string): { kind: string; job: string; facts: Record<string, unknown> }[] =>
  readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as { kind: string; job: string; facts: Record<string, unknown> });

/** `gramfuse demo` on the shipped label-skew-v1 example (runs on a clone without ../shared too). */
describe('gramfuse demo', () => {
  it(
    'shows RegMean above the simple average and every single org, with federated evaluations in both ledgers',
    { timeout: 600_000 },
    async () => {
      const out = join(work, 'demo');
      const result = await runCli(['demo', '--out', out, '--json']);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toBe('');
      const demo = JSON.parse(result.stdout) as {
        results: { model: string; kind: string; accuracy: number; macroF1: number }[];
        hfCheckpoint: string;
        federated: { owner: string; examples: number; accuracy: number; macroF1: number }[];
        summary: string;
        mergedSha256: string;
        verify: string[];
        ledgers: { coordinator: string; agents: string[] };
      };
      const by = new Map(demo.results.map((r) => [r.model, r]));
      expect([...by.keys()].sort()).toEqual([
        'average',
        'ensemble (3 models)',
        'org0',
        'org1',
        'org2',
        'regmean',
        'task-arithmetic',
        'ties',
      ]);
      // Best first.
      const accuracies = demo.results.map((r) => r.accuracy);
      expect(accuracies).toEqual([...accuracies].sort((a, b) => b - a));
      const regmean = by.get('regmean')!.accuracy;
      expect(regmean).toBeGreaterThan(by.get('average')!.accuracy);
      for (const org of ['org0', 'org1', 'org2']) expect(regmean, org).toBeGreaterThan(by.get(org)!.accuracy);
      expect(demo.summary).toMatch(/beats the simple average .* and the best single owner's model/);
      // Federated evaluation: one report per owner, on its 500 held-out rows, in the agent's and the coordinator's ledger.
      expect(demo.federated.map((f) => f.owner).sort()).toEqual(['org0', 'org1', 'org2']);
      for (const f of demo.federated) {
        expect(f.examples).toBe(500);
        expect(f.accuracy).toBeGreaterThan(0);
        expect(f.accuracy).toBeLessThanOrEqual(1);
      }
      const reported = records(demo.ledgers.coordinator).filter((r) => r.kind === 'evaluation.reported');
      expect(reported.map((r) => r.facts.owner).sort()).toEqual(['org0', 'org1', 'org2']);
      for (const [i, ledger] of demo.ledgers.agents.entries()) {
        const own = records(ledger).filter((r) => r.kind === 'evaluation.reported');
        expect(own).toHaveLength(1);
        expect(own[0]!.facts.model).toBe(demo.mergedSha256);
        const fed = demo.federated.find((f) => f.owner === `org${i}`)!;
        expect(Math.abs(Number(own[0]!.facts.accuracy) - fed.accuracy)).toBeLessThan(1e-12);
      }
      // The merged model handed back as a Hugging Face checkpoint: BertForSequenceClassification's 41 tensors
      // (5 embedding, 16 per layer × 2, pooler 2, classifier 2), nn.Linear weights [out, in], the tokenizer beside.
      const hf = await readHfCheckpoint(demo.hfCheckpoint);
      expect(hf.tensors.size).toBe(41);
      expect(hf.tensors.get('bert.encoder.layer.1.output.dense.weight')?.shape).toEqual([128, 512]);
      expect(hf.tensors.get('classifier.weight')?.shape).toEqual([14, 128]);
      expect(readFileSync(join(demo.hfCheckpoint, 'tokenizer.json'), 'utf8')).toBe(readFileSync(EXAMPLE_TOKENIZER, 'utf8'));
      expect(readFileSync(join(demo.hfCheckpoint, 'README.md'), 'utf8')).toContain(demo.mergedSha256);
      expect(demo.verify.filter((v) => v.includes('chain and signatures verify'))).toHaveLength(4);
      expect(demo.verify.filter((v) => v.includes('ledgers agree'))).toHaveLength(3);
    },
  );

  it(
    '--secure-aggregation: the coordinator merges masked statistics; the merged model is the plaintext merge of the same statistics',
    { timeout: 600_000 },
    async () => {
      const out = join(work, 'demo-secure');
      const result = await runCli(['demo', '--secure-aggregation', '--out', out, '--json']);
      expect(result.code, result.stderr).toBe(0);
      const demo = JSON.parse(result.stdout) as {
        maxRelDiffVsPlain: number;
        results: { model: string; accuracy: number }[];
        report: string;
      };
      // Float32 rounding of the merged values is the only difference (a handful of values one float32 step apart).
      expect(demo.maxRelDiffVsPlain).toBeLessThan(1e-6);
      const report = JSON.parse(readFileSync(demo.report, 'utf8')) as { privacy?: { secureAggregation: boolean }; owners: unknown[] };
      expect(report.privacy?.secureAggregation).toBe(true);
      expect(report.owners).toHaveLength(1);
      const coordinator = records(join(out, 'coordinator', 'audit.jsonl'));
      expect(coordinator.filter((r) => r.kind === 'secure.round').map((r) => r.facts.phase)).toEqual([
        'sharing',
        'uploading',
        'confirming',
        'unmasking',
        'summed',
      ]);
    },
  );
});
