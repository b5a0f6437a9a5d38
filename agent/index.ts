/** agent/: what a data owner runs. The only entry other folders import. */
export { buildFeeds, type InputRole, inputRoles } from './batches.js';
export { loadTokenizer, type TextTokenizer, type TextTokenizerOptions, type TokenizedExample } from './tokenizer.js';
