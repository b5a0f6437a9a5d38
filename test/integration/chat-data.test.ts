// @needs-fixtures: reads the full fixture set (../shared/fixtures, or GRAMFUSE_FIXTURES); skipped where it is absent, never in CI.
// Chat data end to end: `agent plan` and `agent collect` on a {"messages"} file with the tiny Llama export and the
// tokenizer of its Hugging Face directory (whose tokenizer_config.json carries the chat template). The statistics
// equal those of a text file holding the same conversations written out by hand, so the template was rendered and its
// special tokens were taken as they are (not added a second time); without the template the plan refuses first.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { exitCodeByErrorCode, ErrorCode } from '../../shared/index.js';
import { parseSafetensors } from '../../shared/merge/index.js';
import { runCli } from '../helpers/cli.js';
import { fixture, fixtureModel, jsonlRows } from '../helpers/fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'gramfuse-chat-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const MODEL = fixtureModel('tiny', 'llama-a');
const TOKENIZER = fixture('hf', 'tiny', 'llama-a', 'tokenizer.json');
// 40 real rows as one-turn conversations: the question is the description (cut short enough that no example reaches
// --max-length, where chat and text truncate differently), the answer its label.
const rows = jsonlRows(fixture('scenarios', 'label-skew', 'org0.jsonl'), 40).map((r) => ({
  question: r.text.slice(0, 160),
  answer: r.label,
}));
const write = (name: string, lines: readonly object[]): string => {
  const path = join(work, name);
  writeFileSync(path, lines.map((l) => JSON.stringify(l)).join('\n'));
  return path;
};
const chat = write(
  'chat.jsonl',
  rows.map((r) => ({
    messages: [
      { role: 'user', content: r.question },
      { role: 'assistant', content: r.answer },
    ],
  })),
);
// The fixture's template by hand ("[CLS] " first, then "role: content [SEP] " per turn), less the [CLS] … [SEP] that
// the tokenizer's own post-processor puts around a text: the same tokens, if (and only if) the chat is encoded right.
const text = write(
  'same-as-text.jsonl',
  rows.map((r) => ({ text: `user: ${r.question} [SEP] assistant: ${r.answer}` })),
);
const common = ['--model', MODEL, '--tokenizer', TOKENIZER, '--max-length', '128', '--min-rows', '1', '--dtype', 'float64'];

async function collect(name: string, data: string): Promise<{ tensors: Map<string, Float64Array>; summary: Record<string, unknown> }> {
  const out = join(work, name);
  const r = await runCli(['agent', 'collect', '--data', data, '--out', out, '--json', ...common]);
  expect(r.code, r.stderr).toBe(0);
  const file = readFileSync(join(out, 'statistics.safetensors'));
  const { tensors } = parseSafetensors(file, (reason) => new Error(reason));
  const values = new Map<string, Float64Array>();
  for (const [id, t] of tensors) {
    const bytes = t.bytes;
    values.set(id, new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
  }
  return { tensors: values, summary: JSON.parse(r.stdout) as Record<string, unknown> };
}

describe('chat data with the tiny Llama', () => {
  it('the plan states which tokens enter the Grams', { timeout: 120_000 }, async () => {
    const printed = await runCli(['agent', 'plan', '--data', chat, ...common]);
    expect(printed.code, printed.stderr).toBe(0);
    expect(printed.stdout).toContain(
      "tokens in the Grams: every token of every example except padding; a chat example counts whole (every role's turns, the template's markers and special tokens)",
    );
    const json = await runCli(['agent', 'plan', '--data', chat, '--json', ...common]);
    expect(JSON.parse(json.stdout)).toMatchObject({ gramTokens: 'non_pad', examples: 40 });
    const padded = await runCli(['agent', 'plan', '--data', chat, '--json', '--include-padding', ...common]);
    expect(JSON.parse(padded.stdout).gramTokens).toBe('all');
  });

  it('agent collect on a chat file equals the same conversations written out as text', { timeout: 300_000 }, async () => {
    const fromChat = await collect('bundle-chat', chat);
    const fromText = await collect('bundle-text', text);
    expect(fromChat.summary.examples).toBe(40);
    expect(fromChat.summary.tokens).toBe(fromText.summary.tokens);
    expect((fromChat.summary.plan as { gramTokens: string }).gramTokens).toBe('non_pad');
    expect([...fromChat.tensors.keys()].sort()).toEqual([...fromText.tensors.keys()].sort());
    const grams = [...fromChat.tensors.keys()].filter((id) => id.startsWith('gram/'));
    expect(grams.length).toBeGreaterThan(0);
    for (const [id, a] of fromChat.tensors) {
      const b = fromText.tensors.get(id)!;
      let scale = 0;
      let diff = 0;
      for (let i = 0; i < a.length; i++) {
        scale = Math.max(scale, Math.abs(b[i]!));
        diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
      }
      expect(diff, id).toBeLessThanOrEqual(1e-9 * Math.max(scale, 1));
    }
    // A second [CLS]/[SEP] pair (the template's plus the post-processor's) would be 80 more tokens than the text's.
    const perExample = (fromChat.summary.tokens as number) / 40;
    expect(perExample).toBeLessThan(128);
  });

  it(
    'a chat file with a tokenizer that has no tokenizer_config.json beside it: INVALID_DATA before anything runs',
    { timeout: 60_000 },
    async () => {
      const bare = join(work, 'bare');
      mkdirSync(bare, { recursive: true });
      copyFileSync(TOKENIZER, join(bare, 'tokenizer.json'));
      const out = join(work, 'bundle-none');
      const r = await runCli(['agent', 'collect', '--data', chat, '--out', out, ...common, '--tokenizer', join(bare, 'tokenizer.json')]);
      expect(r.code).toBe(exitCodeByErrorCode[ErrorCode.InvalidData]);
      expect(r.stderr).toContain(
        `chat.jsonl:1: chat data needs the model's chat template, and there is no ${join(bare, 'tokenizer_config.json')}`,
      );
      expect(r.stderr).toContain("put the checkpoint's own tokenizer_config.json (with its chat_template) beside the tokenizer.json");
      expect(() => readFileSync(join(out, 'manifest.json'))).toThrow();
    },
  );
});
