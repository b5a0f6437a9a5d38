/** coordinator/intake/: admission (a pure manifest check against the template) and the group commit of uploads. */
export { admitManifest, checkJobBudget } from './admission.js';
export { CommitBatch, commitRecords } from './commit-batch.js';
