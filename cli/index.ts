/** cli/: the gramfuse command and the local-mode pipelines it composes from agent/ and shared/. */
export { type LocalMergeOptions, type LocalMergeResult, ownerNames, runLocalMerge } from './local-merge.js';
export { certsFlags, certsInit, certsIssue, loadTls, parseSpecText } from './federation-commands.js';
export { auditReconcile, auditVerify } from './audit-commands.js';
