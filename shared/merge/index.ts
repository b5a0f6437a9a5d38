/**
 * shared/merge/: the merge math (contributions, RegMean solve, baselines, TIES), the disclosure plan, bundles, and the
 * one streamed merge pipeline over a StatisticSource that local mode, bundles and the coordinator all run.
 */
export {
  addContribution,
  type Aggregate,
  buildContribution,
  diagonalTimes,
  gramScale,
  noRowsError,
  ownerWeight,
  type Contribution,
  emptyAggregate,
  type GramStatistics,
  regularizedGram,
  transpose,
  weightAsInOut,
  weightFromInOut,
} from './contributions.js';
export {
  finishParameters,
  gramAtAlpha,
  groupSolutionValues,
  type GroupSystem,
  groupSystem,
  type LayerDiagnostics,
  solveRegMean,
} from './solve.js';
export {
  alphaAfterStatistics,
  DEFAULT_ALPHA_GRID,
  defaultLambda,
  headIsAveraged,
  MergeMethod,
  MergeSpec,
  type MergeSpecInput,
  needsBase,
  statisticsAlpha,
  Weighting,
} from './spec.js';
export { sumMaps, tiesAgree, tiesElect, tiesFinish, tiesTrim } from './ties.js';
export {
  parseSafetensors,
  parseSafetensorsHeader,
  readSafetensorsHeader,
  type SafetensorsEntry,
  type SafetensorsEntryInfo,
  type SafetensorsSource,
  type SafetensorsTensor,
  writeSafetensors,
  writeSafetensorsFrom,
} from './safetensors.js';
export { type AlphaCandidate, type AlphaSelection, formatMergeReport, type MergeReport } from './report.js';
export { statisticsAtAlpha } from './alpha.js';
export {
  abandonBundle,
  BUNDLE_MANIFEST,
  BUNDLE_TENSORS,
  type BundleInProgress,
  BundleManifest,
  finishBundle,
  JoinManifest,
  joinManifest,
  startBundle,
  type VerifiedBundle,
  verifyBundle,
} from './bundle.js';
export {
  checkPolicyAfterCollection,
  checkPolicyBeforeCollection,
  contributionTensors,
  DisclosurePlan,
  DisclosurePolicy,
  GramTokens,
  PlannedStatistic,
  planDisclosure,
  statisticsDtype,
  FLOAT32_STATISTICS_ABOVE_BYTES,
  StatisticKind,
} from './plan.js';
export {
  groupAggregate,
  type MergedFiles,
  mergedFiles,
  type MergePipelineInput,
  type MergePipelineOutcome,
  mergedMetadata,
  ownerCounts,
  type PipelineProgress,
  runMergePipeline,
  type StatisticSource,
  type StatisticSums,
  statisticSums,
} from './pipeline.js';
export { StatisticDirectory } from './statistic-directory.js';
export {
  alignWithCheckpoint,
  type CheckpointTensor,
  HF_SHARD_BYTES,
  type HfCheckpoint,
  type HfOutput,
  matchCheckpointByValue,
  readHfCheckpoint,
  transposeBytes,
  writeHfCheckpoint,
} from './hf-checkpoint.js';
