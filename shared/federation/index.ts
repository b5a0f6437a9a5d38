export { JobSpec, type JobState, parseJobSpec } from './job-spec.js';
