/** agent/: what a data owner runs. The only entry other folders import. */
export { buildFeeds, type InputRole, inputRoles } from './batches.js';
export {
  type BatchOptions,
  classificationMetrics,
  collectGramStatistics,
  type CollectOptions,
  lengthBatches,
  predictLogits,
  type Progress,
} from './collect.js';
export { collectExamples, type DataReaderOptions, type Example, readExamples, seededRandom } from './data-reader.js';
export { loadTokenizer, type TextTokenizer, type TextTokenizerOptions, type TokenizedExample } from './tokenizer.js';
export { type CollectionRequest, type CollectionResult, runCollectionJob } from './collection-job.js';
export { analyzeInWorker, collectInWorker } from './worker-client.js';
export { evaluateEach, type EvaluateEachResult, type EvaluateOptions, type EvaluationResult, runEvaluation } from './evaluate.js';
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
