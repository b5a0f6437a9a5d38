/** coordinator/intake/: admission (a pure manifest check against the template) and the group commit of uploads. */
export { admitManifest, checkJobBudget } from './admission.js';
export { CommitBatch, commitRecords, signReceipts } from './commit-batch.js';
export { allowedTemplatePath } from './template-path.js';
export { checkChunk, storeChunk } from './chunk-intake.js';
