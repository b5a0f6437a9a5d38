/** client/: the federation gRPC client the agent, the CLI and the benchmarks use (never the coordinator). */
export { type ClientTls, type ConnectOptions, connectFederation, type FederationClient } from './connect.js';
export { chunkMessage, type ChunkMessage, ChunkMessagePool } from './chunk-message.js';
export { backoffMs, codedError, isRetryable, type RetryPolicy, withRetries } from './retry.js';
export { type DownloadedModel, downloadMergedModel } from './download-model.js';
