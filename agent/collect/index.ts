/** agent/collect/: reading the owner's data, tokenizing, batching, and collecting Gram statistics with onnxruntime in
 * a worker thread (inference-worker.ts), so the caller's event loop keeps running. */
export { buildFeeds, type InputRole, inputRoles } from './batches.js';
export {
  type BatchOptions,
  classificationMetrics,
  collectGramStatistics,
  type CollectOptions,
  type CollectTimings,
  lengthBatches,
  predictLogits,
  type Progress,
} from './collect.js';
export { collectExamples, type DataReaderOptions, type Example, readExamples, seededRandom } from './data-reader.js';
export { encodeExample, loadTokenizer, type TextTokenizer, type TextTokenizerOptions, type TokenizedExample } from './tokenizer.js';
export { type ChatMessage, type ChatTemplate, loadChatTemplate } from './chat-template.js';
export { type CollectionRequest, type CollectionResult, runCollectionJob } from './collection-job.js';
export { analyzeInWorker, collectInWorker } from './worker-client.js';
export { type CollectionPass, defaultMemoryBudget, formatPasses, memoryTarget, passBytes, planPasses } from './passes.js';
export { writeStatistics, type WrittenStatistics } from './statistics-writer.js';
export { type LanguageModelMetrics, languageModelMetrics } from './language-model.js';
