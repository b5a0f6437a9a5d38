/** coordinator/solve/: a job's solve (the one merge pipeline over committed statistics) behind a SolveExecutor. */
export { type SolveExecutor, workerThreadExecutor } from './executor.js';
export { Slots } from './slots.js';
export { committedStatistics, runSolveJob, type SolveOutcome, type SolveProgress, type SolveRequest } from './solve-job.js';
export {
  type AnswerHeader,
  type AnswerReply,
  type GroupTaskState,
  type NatsExecutorOptions,
  NatsSolveExecutor,
  type SolveGroupView,
} from './nats-executor.js';
export { CHECK_PROJECTIONS, checkTolerance, DEFAULT_RESIDUAL_TOLERANCE, readFloat64File, type Verdict, verifySolution } from './tasks.js';
