/** shared/federation/: the job spec and identity rules both sides of the federation use. */
export { IDENTITY_PATTERN, IdentityName, isValidIdentity, JobSpec, type JobState, parseJobSpec } from './job-spec.js';
