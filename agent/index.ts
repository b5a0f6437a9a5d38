/** agent/: what a data owner runs. The only entry other folders import. */
export {
  analyzeInWorker,
  type BatchOptions,
  buildFeeds,
  classificationMetrics,
  collectExamples,
  collectGramStatistics,
  type CollectionPass,
  type CollectionRequest,
  type CollectionResult,
  collectInWorker,
  type CollectOptions,
  type CollectTimings,
  defaultMemoryBudget,
  formatPasses,
  memoryTarget,
  type DataReaderOptions,
  type Example,
  type InputRole,
  inputRoles,
  lengthBatches,
  passBytes,
  planPasses,
  loadTokenizer,
  predictLogits,
  type Progress,
  readExamples,
  runCollectionJob,
  seededRandom,
  type TextTokenizer,
  type TextTokenizerOptions,
  type TokenizedExample,
  writeStatistics,
  type WrittenStatistics,
} from './collect/index.js';
export {
  evaluateEach,
  type EvaluateEachResult,
  type EvaluateOptions,
  type EvaluationResult,
  type LanguageModelEvaluation,
  runEvaluation,
} from './evaluate.js';
export { type LanguageModelMetrics, languageModelMetrics } from './collect/index.js';
export { evaluateForJob, type EvaluateForJobOptions, type EvaluateForJobResult } from './evaluate-run.js';
export {
  combinePolicies,
  type EffectivePolicy,
  formatPolicySources,
  type OwnerPolicy,
  ownerOnly,
  ownerPolicy,
  OwnerPolicyFile,
  readOwnerPolicyFile,
  type RuleSource,
} from './policy.js';
export { type AgentOptions, collectBundle, formatPlan, ownerFromModelPath, planForOwner } from './commands.js';
export { openAgentLedger, runAgent, type RunAgentOptions, type RunAgentResult } from './run/index.js';
