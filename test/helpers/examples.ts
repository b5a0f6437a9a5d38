import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The example models and data the repository ships (examples/README.md): what the core tests run on, so
 * that they pass on a clone without ../shared beside it.
 */
export const EXAMPLES = resolve(dirname(fileURLToPath(import.meta.url)), '../../examples/label-skew-v1');
export const exampleModel = (org: string): string => join(EXAMPLES, org, 'model.onnx');
export const EXAMPLE_DATA = (org: string): string => join(EXAMPLES, 'data', `${org}.train.jsonl`);
export const EXAMPLE_HELDOUT = (org: string): string => join(EXAMPLES, 'data', `${org}.heldout.jsonl`);
export const EXAMPLE_TEST = join(EXAMPLES, 'data', 'test.en.jsonl');
export const EXAMPLE_TOKENIZER = join(EXAMPLES, 'tokenizer.json');
export const EXAMPLE_LABELS = join(EXAMPLES, 'labels.json');
