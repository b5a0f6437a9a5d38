/** solver/: `gramfuse solver serve`, a worker that pulls solve tasks from NATS JetStream, fetches sums over gRPC, solves. */
export { redeliveryDelayMs, type SolverHandle, type SolverOptions, startSolver, type TaskRecord } from './serve.js';
