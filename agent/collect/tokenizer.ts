import { readFile } from 'node:fs/promises';

import * as hf from '@huggingface/tokenizers';

import { ErrorCode, fileError, GramfuseError } from '../../shared/index.js';
import { type ChatTemplate, loadChatTemplate } from './chat-template.js';
import type { Example } from './data-reader.js';

/**
 * The part of @huggingface/tokenizers gramfuse uses. The package's own .d.ts files use extensionless
 * imports that NodeNext resolution cannot follow, so its types arrive as `any`; this facade types them once.
 */
interface HfTokenizer {
  encode(
    text: string,
    options: { text_pair: string | null; return_token_type_ids: true; add_special_tokens: boolean },
  ): { ids: number[]; token_type_ids: number[] };
  tokenize(text: string, options: { add_special_tokens: boolean }): string[];
  token_to_id(token: string): number | undefined;
  readonly post_processor: {
    post_process(
      tokens: string[],
      pair: string[] | undefined,
      addSpecialTokens: boolean,
    ): { tokens: string[]; tokens_pair?: string[]; token_type_ids?: number[] };
  } | null;
}
// eslint-disable-next-line @typescript-eslint/no-unsafe-assignment -- typed right here
const Tokenizer: new (json: object, config: object) => HfTokenizer = hf.Tokenizer;

/** One tokenized example, before padding. */
export interface TokenizedExample {
  readonly ids: readonly number[];
  readonly typeIds: readonly number[];
}

export interface TextTokenizerOptions {
  /** Longest sequence fed to the model, special tokens included. Default 128. */
  readonly maxLength?: number;
}

/** A HuggingFace tokenizer.json loaded fully offline, with truncation gramfuse controls. */
export interface TextTokenizer {
  readonly path: string;
  readonly maxLength: number;
  readonly padId: number;
  /** The checkpoint's chat template (tokenizer_config.json or chat_template.jinja beside tokenizer.json), for chat data. */
  readonly chatTemplate: ChatTemplate;
  /** `addSpecialTokens` (default true): the post-processor's template ([CLS] … [SEP], <s> …); false for text that holds its own. */
  encode(text: string, pair?: string, options?: { readonly addSpecialTokens?: boolean }): TokenizedExample;
}

/**
 * An example's tokens: a rendered chat already holds the template's special tokens, so none are added (as
 * transformers' apply_chat_template(tokenize=True) does); every other text gets the tokenizer's own.
 */
export function encodeExample(tokenizer: TextTokenizer, example: Pick<Example, 'text' | 'pair' | 'format'>): TokenizedExample {
  return tokenizer.encode(example.text, example.pair, { addSpecialTokens: example.format !== 'chat' });
}

export async function loadTokenizer(path: string, options: TextTokenizerOptions = {}): Promise<TextTokenizer> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw fileError(error, path, 'reading the tokenizer');
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch (error) {
    throw new GramfuseError(
      ErrorCode.InvalidArgument,
      `${path}: not valid JSON (${(error as Error).message}); pass a HuggingFace tokenizer.json`,
      {
        facts: { path },
        cause: error,
      },
    );
  }
  if (typeof json.model !== 'object' || json.model === null) {
    throw new GramfuseError(ErrorCode.InvalidArgument, `${path}: no "model" section; this is not a HuggingFace tokenizer.json`, {
      facts: { path },
    });
  }
  let tokenizer: HfTokenizer;
  try {
    tokenizer = new Tokenizer(json, {});
  } catch (error) {
    throw new GramfuseError(ErrorCode.InvalidArgument, `${path}: the tokenizer cannot be built: ${(error as Error).message}`, {
      facts: { path },
      cause: error,
    });
  }
  const truncation = json.truncation as { max_length?: number } | null | undefined;
  const maxLength = options.maxLength ?? truncation?.max_length ?? 128;
  const padding = json.padding as { pad_id?: number } | null | undefined;
  const padId = padding?.pad_id ?? tokenizer.token_to_id('[PAD]') ?? tokenizer.token_to_id('<pad>') ?? 0;
  const chatTemplate = await loadChatTemplate(path);
  return {
    path,
    maxLength,
    padId,
    chatTemplate,
    encode(textA: string, pair?: string, encodeOptions?: { readonly addSpecialTokens?: boolean }): TokenizedExample {
      const specials = encodeOptions?.addSpecialTokens ?? true;
      const options = { text_pair: pair ?? null, return_token_type_ids: true as const, add_special_tokens: specials };
      const full = tokenizer.encode(textA, options);
      if (full.ids.length <= maxLength) return { ids: full.ids, typeIds: full.token_type_ids };
      return truncate(tokenizer, textA, pair, maxLength, specials);
    },
  };
}

/**
 * Truncation as HuggingFace does it (longest first, from the right), keeping the template's special
 * tokens: encode without specials, cut to fit, and let the post-processor add them back.
 */
function truncate(tokenizer: HfTokenizer, textA: string, pair: string | undefined, maxLength: number, specials: boolean): TokenizedExample {
  const a = tokenizer.tokenize(textA, { add_special_tokens: false });
  const b = pair === undefined ? [] : tokenizer.tokenize(pair, { add_special_tokens: false });
  // Special tokens the template adds, counted on this very input (an empty pair would count as none).
  const added =
    tokenizer.encode(textA, { text_pair: pair ?? null, return_token_type_ids: true, add_special_tokens: specials }).ids.length -
    a.length -
    b.length;
  const budget = Math.max(0, maxLength - added);
  while (a.length + b.length > budget) {
    if (a.length >= b.length) a.pop();
    else b.pop();
  }
  const post = tokenizer.post_processor;
  const tokens =
    post === null
      ? { tokens: a, token_type_ids: undefined as number[] | undefined }
      : post.post_process(a, pair === undefined ? undefined : b, specials);
  const ids = [...tokens.tokens, ...(tokens.tokens_pair ?? [])].map((token) => tokenizer.token_to_id(token) ?? 0);
  return { ids, typeIds: tokens.token_type_ids ?? ids.map(() => 0) };
}
