// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { runCli } from '../helpers/cli.js';
import { fixture, fixtureModel, TOKENIZER } from '../helpers/fixtures.js';
import { dataScenario, referenceFigures, referenceLanguages, scenarioOrgs } from '../helpers/reference.js';

const METHODS = ['regmean', 'average', 'task-arithmetic', 'ties'] as const;
const work = mkdtempSync(join(tmpdir(), 'gramfuse-reference-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/**
 * `gramfuse merge` + `gramfuse eval` on the real fixtures reproduce the reference implementation's
 * accuracies (../shared/fixtures/reference.json) within 1.0 point, with the reference's settings.
 */
describe.each(['label-skew', 'label-skew-v1', 'languages'] as const)('reference accuracies: %s', (scenario) => {
  const reference = referenceFigures(scenario);
  const orgs = scenarioOrgs(scenario);
  const languages = referenceLanguages(scenario);
  const ours: Record<string, Record<string, number>> = {};

  it.each(METHODS)('%s within 1.0 point on every test set', { timeout: 900_000 }, async (method) => {
    const out = join(work, `${scenario}-${method}.onnx`);
    const args = [
      'merge',
      '--method',
      method,
      '--out',
      out,
      '--json',
      '--tokenizer',
      TOKENIZER,
      '--max-length',
      String(reference.settings.max_length ?? 128),
    ];
    for (const org of orgs) {
      args.push('--model', fixtureModel(scenario, org));
      if (method === 'regmean') args.push('--data', fixture('scenarios', dataScenario(scenario), `${org}.jsonl`));
    }
    if (method === 'regmean') args.push('--alpha', String(reference.settings.alpha ?? 0.9));
    if (method === 'task-arithmetic')
      args.push('--base', fixtureModel(scenario, 'base'), '--lambda', String(reference.settings.ta_lambda ?? 0.3));
    if (method === 'ties')
      args.push(
        '--base',
        fixtureModel(scenario, 'base'),
        '--lambda',
        String(reference.settings.ties_lambda ?? 1),
        '--ties-k',
        String(reference.settings.ties_k ?? 0.2),
      );
    const merged = await runCli(args);
    expect(merged.stderr).toBe('');
    expect(merged.code).toBe(0);
    const report = JSON.parse(merged.stdout);
    expect(report.owners).toHaveLength(orgs.length);
    if (method === 'regmean') expect(report.layers.every((l: { relativeResidual: number }) => l.relativeResidual < 1e-10)).toBe(true);

    ours[method] = {};
    for (const lang of languages) {
      const evaluated = await runCli([
        'eval',
        '--model',
        out,
        '--data',
        fixture('data', 'test', `${lang}.jsonl`),
        '--tokenizer',
        TOKENIZER,
        '--json',
      ]);
      expect(evaluated.code).toBe(0);
      const { accuracy } = JSON.parse(evaluated.stdout) as { accuracy: number };
      ours[method][lang] = accuracy;
      const expected = reference.accuracy[method]![lang]!;
      expect(
        Math.abs(accuracy - expected) * 100,
        `${method} on ${lang}: ours ${(accuracy * 100).toFixed(1)}, reference ${(expected * 100).toFixed(1)}`,
      ).toBeLessThanOrEqual(1.0);
    }
  });

  it('keeps the reference order wherever its methods are more than 1 point apart', () => {
    expect(Object.keys(ours)).toEqual([...METHODS]);
    for (const lang of languages) {
      for (const a of METHODS) {
        for (const b of METHODS) {
          const gap = reference.accuracy[a]![lang]! - reference.accuracy[b]![lang]!;
          if (gap > 0.01) expect(ours[a]![lang]!, `${a} > ${b} on ${lang}`).toBeGreaterThan(ours[b]![lang]!);
        }
      }
    }
  });
});
