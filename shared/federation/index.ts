/** shared/federation/: what both sides of the federation agree on, each defined once: the job spec, identities, statistic ids. */
export {
  DEFAULT_UPLOAD_WINDOW,
  IDENTITY_PATTERN,
  IdentityName,
  isValidIdentity,
  JobSpec,
  type JobState,
  MAX_UPLOAD_WINDOW,
  parseJobSpec,
  PrivacySpec,
  secureThreshold,
} from './job-spec.js';
export { type CountName, type ParsedStatisticId, parseStatisticId, type StatisticId, StatisticIds, statisticFile } from './statistic-id.js';
export {
  chunkAt,
  chunkBoundsProblem,
  chunkCount,
  chunkLength,
  DEFAULT_CHUNK_BYTES,
  readChunk,
  sha256Hex,
  type StatisticChunk,
} from './chunk.js';
export { type Receipt, type ReceiptFields, receiptFields } from './receipt.js';
