import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The full fixture set: real models and data (see its README). `GRAMFUSE_FIXTURES`, or `../shared/fixtures`
 * beside the repository. Test files that need it start with `// @needs-fixtures` (vitest.config.ts skips them
 * where it is absent, except in CI).
 */
export const FIXTURES = process.env.GRAMFUSE_FIXTURES ?? resolve(dirname(fileURLToPath(import.meta.url)), '../../../shared/fixtures');

export const fixture = (...parts: string[]): string => join(FIXTURES, ...parts);
export const fixtureModel = (scenario: string, org: string, file = 'model.onnx'): string => fixture('models', scenario, org, file);
export const TOKENIZER = fixture('tokenizer', 'tokenizer.json');

/** Every fixture model, with the architecture family it belongs to. */
export const ALL_MODELS: readonly { path: string; family: 'bert-classic' | 'bert-dynamo' | 'gpt2' | 't5' }[] = [
  ...['base', 'org0', 'org1', 'org2', 'org3', 'org4', 'union'].map((org) => ({
    path: fixtureModel('label-skew', org),
    family: 'bert-classic' as const,
  })),
  ...['base', 'en', 'de', 'fr', 'it'].map((org) => ({ path: fixtureModel('languages', org), family: 'bert-classic' as const })),
  ...['org0', 'org1'].map((org) => ({ path: fixtureModel('label-skew', org, 'model.dynamo.onnx'), family: 'bert-dynamo' as const })),
  ...['gpt2-a', 'gpt2-b'].map((org) => ({ path: fixtureModel('tiny', org), family: 'gpt2' as const })),
  ...['t5-a', 't5-b'].map((org) => ({ path: fixtureModel('tiny', org), family: 't5' as const })),
];

/** The first `count` rows of a JSONL fixture. */
export function jsonlRows<T = { text: string; label: string }>(path: string, count: number): T[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .slice(0, count)
    .map((line) => JSON.parse(line) as T);
}

/** ‖a − b‖_F / ‖b‖_F in float64. */
export function relativeFrobenius(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i]! - b[i]!;
    diff += d * d;
    norm += b[i]! * b[i]!;
  }
  return Math.sqrt(diff) / Math.sqrt(norm);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < b.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}
