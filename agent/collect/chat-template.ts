import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { Template } from '@huggingface/jinja';

import { ErrorCode, fileError, GramfuseError } from '../../shared/index.js';

/** One turn of a conversation, as chat data and chat templates hold it (other keys pass through to the template). */
export interface ChatMessage {
  readonly role: string;
  readonly content: string | readonly unknown[];
  readonly [key: string]: unknown;
}

/**
 * A checkpoint's chat template: the Jinja text of its `tokenizer_config.json` (or `chat_template.jinja` beside it,
 * which newer transformers versions write instead), rendered with @huggingface/jinja as transformers'
 * `apply_chat_template(messages, tokenize=False, add_generation_prompt=False)` does, with the file's special tokens.
 */
export interface ChatTemplate {
  /** The file the template was read from, or the one that should have held it (for messages). */
  readonly source: string;
  /** Whether the checkpoint has a template at all; `render` throws a coded error naming `source` when not. */
  readonly available: boolean;
  /** The conversation as text, special tokens included (encode it without adding more). `where` prefixes errors. */
  render(messages: readonly ChatMessage[], where: string): string;
}

/** Special-token variables transformers passes to every chat template (its special_tokens_map). */
const SPECIAL_TOKENS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;

/**
 * The chat template of the checkpoint whose `tokenizer.json` is `tokenizerPath`: `chat_template.jinja` if present,
 * else `tokenizer_config.json`'s `chat_template` (a string, or transformers' list of named templates: `default`).
 * A checkpoint without either still loads (text data needs none): its template is unavailable.
 */
export async function loadChatTemplate(tokenizerPath: string): Promise<ChatTemplate> {
  const directory = dirname(tokenizerPath);
  const configPath = join(directory, 'tokenizer_config.json');
  const jinjaPath = join(directory, 'chat_template.jinja');
  const config = await readOptionalText(configPath, 'reading the tokenizer configuration');
  let fields: Record<string, unknown> = {};
  if (config !== undefined) {
    try {
      const parsed: unknown = JSON.parse(config);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
      fields = parsed as Record<string, unknown>;
    } catch (error) {
      throw new GramfuseError(
        ErrorCode.InvalidData,
        `${configPath}: not a JSON object (${(error as Error).message}); use the checkpoint's own tokenizer_config.json`,
        { facts: { path: configPath }, cause: error },
      );
    }
  }
  const jinja = await readOptionalText(jinjaPath, 'reading the chat template');
  const [text, source] = jinja !== undefined ? [jinja, jinjaPath] : [templateField(fields.chat_template, configPath), configPath];
  const specials: Record<string, string> = {};
  for (const name of SPECIAL_TOKENS) {
    const value = fields[name];
    const content = typeof value === 'string' ? value : (value as { content?: unknown } | null | undefined)?.content;
    if (typeof content === 'string') specials[name] = content;
  }
  if (text === undefined) {
    return {
      source,
      available: false,
      render(_messages, where) {
        throw new GramfuseError(
          ErrorCode.InvalidData,
          `${where}: chat data needs the model's chat template, and ${config === undefined ? `there is no ${configPath}` : `${configPath} has no "chat_template" (nor is there a chat_template.jinja beside it)`}; put the checkpoint's own tokenizer_config.json (with its chat_template) beside the tokenizer.json, or write the data as {"text": …} lines`,
          { facts: { path: configPath } },
        );
      },
    };
  }
  let template: Template;
  try {
    template = new Template(text);
  } catch (error) {
    throw new GramfuseError(
      ErrorCode.InvalidData,
      `${source}: the chat template does not parse (${(error as Error).message}); use the checkpoint's own template`,
      { facts: { path: source }, cause: error },
    );
  }
  return {
    source,
    available: true,
    render(messages, where) {
      try {
        return template.render({ ...specials, messages, add_generation_prompt: false });
      } catch (error) {
        // A template's raise_exception (e.g. "roles must alternate") lands here: the data, not the template, is wrong.
        throw new GramfuseError(
          ErrorCode.InvalidData,
          `${where}: the chat template of ${source} refused this conversation: ${(error as Error).message}`,
          { facts: { path: source }, cause: error },
        );
      }
    },
  };
}

async function readOptionalText(path: string, doing: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fileError(error, path, doing);
  }
}

function templateField(value: unknown, configPath: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = value as { name?: unknown; template?: unknown }[];
    const chosen = named.find((t) => t.name === 'default') ?? (named.length === 1 ? named[0] : undefined);
    if (typeof chosen?.template === 'string') return chosen.template;
  }
  throw new GramfuseError(
    ErrorCode.InvalidData,
    `${configPath}: "chat_template" is neither a string nor a list of {name, template} with a "default" one; use the checkpoint's own tokenizer_config.json`,
    { facts: { path: configPath } },
  );
}
