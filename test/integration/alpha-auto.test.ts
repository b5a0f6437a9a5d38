// `gramfuse merge --alpha auto` (issue #43): every candidate α solved from one set of α-free statistics, scored on
// each org's held-out split, the best example-weighted mean written. Runs on the label-skew-v1 models the repository
// ships (examples/: org0–org2 and their held-out splits, copies of ../shared/fixtures' models), on small slices so
// that it stays quick: 48 training and 100 held-out examples per org, four candidates.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { buildFeeds, inputRoles, loadTokenizer } from '../../agent/index.js';
import type { MergeReport } from '../../shared/merge/index.js';
import { referenceSolve } from '../../shared/linalg/index.js';
import { analyzeModel, createSession, loadModel, runSession } from '../../shared/onnx/index.js';
import { runCli } from '../helpers/cli.js';
import { EXAMPLE_DATA, EXAMPLE_HELDOUT, EXAMPLE_LABELS, EXAMPLE_TOKENIZER, exampleModel } from '../helpers/examples.js';
import { relativeFrobenius } from '../helpers/fixtures.js';
import { mergedWeights, referenceGrams, referenceSystems } from '../helpers/regmean-reference.js';

const ORGS = ['org0', 'org1', 'org2'];
const GRID = [0.1, 0.5, 0.9, 1];
const MAX_LENGTH = 128;
const work = mkdtempSync(join(tmpdir(), 'gramfuse-alpha-auto-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface Row {
  readonly text: string;
  readonly label: string;
}
const rows = (path: string, count: number): Row[] =>
  readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .slice(0, count)
    .map((line) => JSON.parse(line) as Row);
const writeRows = (path: string, list: readonly Row[]): string => {
  writeFileSync(path, list.map((r) => JSON.stringify({ text: r.text, label: r.label })).join('\n') + '\n');
  return path;
};
const sha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

const train = ORGS.map((org) => rows(EXAMPLE_DATA(org), 48));
const heldout = ORGS.map((org) => rows(EXAMPLE_HELDOUT(org), 100));
const trainFiles = ORGS.map((org, i) => writeRows(join(work, `${org}.train.jsonl`), train[i]!));
const heldoutFiles = ORGS.map((org, i) => writeRows(join(work, `${org}.heldout.jsonl`), heldout[i]!));
const ownerFlags = ORGS.flatMap((org, i) => ['--model', exampleModel(org), '--data', trainFiles[i]!]);

/** Accuracy of a classifier on rows, computed here: raw onnxruntime sessions on padded batches, argmax of the logits. */
async function accuracy(modelPath: string, list: readonly Row[]): Promise<number> {
  const labels = JSON.parse(readFileSync(EXAMPLE_LABELS, 'utf8')) as string[];
  const tokenizer = await loadTokenizer(EXAMPLE_TOKENIZER, { maxLength: MAX_LENGTH });
  const model = await loadModel(modelPath);
  const analysis = await analyzeModel(model);
  const session = await createSession(model);
  let correct = 0;
  try {
    for (let start = 0; start < list.length; start += 25) {
      const batch = list.slice(start, start + 25);
      const feeds = buildFeeds(
        batch.map((r) => tokenizer.encode(r.text)),
        analysis.inputs,
        inputRoles(analysis.inputs),
        tokenizer.padId,
      );
      const logits = (await runSession(session, feeds, modelPath)).logits!.data as Float32Array;
      const classes = logits.length / batch.length;
      batch.forEach((r, k) => {
        let best = 0;
        for (let c = 1; c < classes; c++) if (logits[k * classes + c]! > logits[k * classes + best]!) best = c;
        if (labels[best] === r.label) correct++;
      });
    }
  } finally {
    await session.release();
  }
  return correct / list.length;
}

describe('gramfuse merge --alpha auto', () => {
  it("picks the candidate that scores best on the orgs' held-out data, and writes exactly the plain merge at that α", async () => {
    const candidates = join(work, 'candidates');
    const out = join(work, 'auto', 'merged.onnx');
    mkdirSync(join(work, 'auto'));
    const auto = await runCli([
      'merge',
      ...ownerFlags,
      '--tokenizer',
      EXAMPLE_TOKENIZER,
      '--alpha',
      'auto',
      '--alpha-grid',
      GRID.join(','),
      ...heldoutFiles.flatMap((f) => ['--validation-data', f]),
      '--candidates',
      candidates,
      '--out',
      out,
      '--json',
    ]);
    expect(auto.code, auto.stderr).toBe(0);
    const report = JSON.parse(auto.stdout) as MergeReport;
    const selection = report.alphaSelection!;
    expect(selection.metric).toBe('accuracy');
    expect(selection.candidates.map((c) => c.alpha)).toEqual(GRID);
    expect(report.spec.alpha).toBe(selection.chosen);
    expect(report.spec.alphaCandidates).toEqual(GRID);
    // The report file says the same.
    const written = JSON.parse(readFileSync(join(work, 'auto', 'merged.report.json'), 'utf8')) as MergeReport;
    expect(written.alphaSelection).toEqual(selection);

    // Every candidate scored again here, independently of gramfuse's evaluation: each org's accuracy (the batching
    // differs, so a near-tie may flip one example), the example-weighted mean, and the best of the grid.
    const scores: number[] = [];
    for (const c of selection.candidates) {
      expect(c.model).toBe(join(candidates, `alpha-${c.alpha}.onnx`));
      expect(sha(c.model!)).toBe(c.modelSha256.replace(/^sha256:/, ''));
      expect(c.owners.map((o) => [o.name, o.examples])).toEqual(ORGS.map((org) => [org, 100]));
      let sum = 0;
      for (const [o, owner] of c.owners.entries()) {
        const mine = await accuracy(c.model!, heldout[o]!);
        expect(Math.abs(mine - owner.value)).toBeLessThanOrEqual(1 / 100 + 1e-12);
        sum += 100 * mine;
      }
      expect(Math.abs(c.score - c.owners.reduce((s, o) => s + o.examples * o.value, 0) / 300)).toBeLessThan(1e-12);
      scores.push(sum / 300);
    }
    const best = Math.max(...scores);
    const chosen = GRID.indexOf(selection.chosen);
    expect(selection.candidates[chosen]!.score).toBe(Math.max(...selection.candidates.map((c) => c.score)));
    expect(scores[chosen]!).toBeGreaterThanOrEqual(best - 3 / 300);
    // α matters on this data: the grid's scores are not all equal (else the test could not fail).
    expect(Math.max(...scores) - Math.min(...scores)).toBeGreaterThan(0.02);
    console.log(
      `alpha-auto: ${selection.candidates.map((c) => `${c.alpha}: ${(c.score * 100).toFixed(1)}`).join(', ')}; chosen ${selection.chosen}`,
    );

    // The chosen α's model is the plain merge at that α, byte for byte.
    mkdirSync(join(work, 'plain'));
    const plainOut = join(work, 'plain', 'merged.onnx');
    const plain = await runCli([
      'merge',
      ...ownerFlags,
      '--tokenizer',
      EXAMPLE_TOKENIZER,
      '--alpha',
      String(selection.chosen),
      '--out',
      plainOut,
      '--json',
    ]);
    expect(plain.code, plain.stderr).toBe(0);
    expect(sha(plainOut)).toBe(sha(out));
    expect(sha(join(work, 'plain', 'merged.safetensors'))).toBe(sha(join(work, 'auto', 'merged.safetensors')));

    // Each candidate's solved weights against a float64 RegMean at its α from Grams summed here (dumped activations
    // of the same training rows). Block 0's q/k/v (g0: thousands of token rows) is well conditioned below α = 1: the
    // weights must match within 1e-6. At α = 1 (plain least squares on LayerNorm outputs, near-singular) and for the
    // pooler and classifier (g8, g9: 144 rows for 128 inputs) float32 noise in the collected Grams is amplified by
    // the condition number, so there the check is the backward error: the candidate solves the float64 system.
    const reference = await referenceGrams(
      ORGS.map((org, i) => ({ model: exampleModel(org), texts: train[i]!.map((r) => r.text) })),
      { tokenizer: EXAMPLE_TOKENIZER, maxLength: MAX_LENGTH },
      new Set(['g0', 'g8', 'g9']),
    );
    const g0 = new Set(reference.analysis.gramGroups.find((g) => g.id === 'g0')!.weights);
    let worstForward = 0;
    let worstBackward = 0;
    for (const c of selection.candidates) {
      const systems = referenceSystems(reference, c.alpha);
      expect(systems.size).toBe(5);
      const actual = await mergedWeights(c.model!, systems.keys());
      for (const [name, s] of systems) {
        const x = actual.get(name)!;
        const ax = new Float64Array(s.n * s.out);
        for (let p = 0; p < s.n; p++)
          for (let k = 0; k < s.n; k++) {
            const apk = s.a[p * s.n + k]!;
            for (let q = 0; q < s.out; q++) ax[p * s.out + q]! += apk * x[k * s.out + q]!;
          }
        worstBackward = Math.max(worstBackward, relativeFrobenius(ax, s.r));
        if (c.alpha < 1 && g0.has(name)) worstForward = Math.max(worstForward, relativeFrobenius(x, referenceSolve(s.a, s.n, s.r, s.out)));
      }
    }
    expect(worstForward).toBeLessThanOrEqual(1e-6);
    expect(worstBackward).toBeLessThanOrEqual(1e-6);
    console.log(
      `alpha-auto vs float64 RegMean: worst relative weight error (g0, α < 1) ${worstForward.toExponential(2)}, worst relative residual of the float64 system ${worstBackward.toExponential(2)}`,
    );
  }, 600_000);

  it('refuses --alpha-grid without --alpha auto, --alpha auto without one validation file per model, and bundles', async () => {
    const base = ['merge', ...ownerFlags, '--tokenizer', EXAMPLE_TOKENIZER, '--out', join(work, 'refused.onnx')];
    const grid = await runCli([...base, '--alpha-grid', '0.5,1']);
    expect(grid.code).not.toBe(0);
    expect(grid.stderr).toContain('INVALID_ARGUMENT');
    expect(grid.stderr).toContain('--alpha-grid: lists the candidates of --alpha auto');
    const missing = await runCli([...base, '--alpha', 'auto', '--validation-data', heldoutFiles[0]!]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain('give one --validation-data per --model (1 for 3 models)');
    const bad = await runCli([...base, '--alpha', 'auto', '--alpha-grid', '0.5,1.5']);
    expect(bad.stderr).toContain('--alpha-grid: must be a comma-separated list of numbers between 0 and 1');
    const stray = await runCli([...base, '--validation-data', heldoutFiles[0]!]);
    expect(stray.stderr).toContain('--validation-data: only used with --alpha auto');
  }, 120_000);
});
