/** coordinator/jobs/: the coordinator facade (jobs, admission, intake, solves), the job record and its lifecycle table. */
export { type ChunkIn, Coordinator, type CoordinatorOptions, type Receipt, type ReceiptFields } from './coordinator.js';
export type { JobView } from './job.js';
export { checkTransition, TRANSITIONS } from './lifecycle.js';
