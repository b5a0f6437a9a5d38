// The federation client's one retry policy: retryable gRPC codes only (UNAVAILABLE, DEADLINE_EXCEEDED; never
// RESOURCE_EXHAUSTED, a limit of the coordinator's that a retry would only hit again), exponential backoff with
// full jitter, at most `attempts` tries. Unary calls and the agent's resumable upload both use it.
import type * as grpc from '@grpc/grpc-js';

import { ErrorCode, errorFromGrpc, GramfuseError } from '../shared/index.js';

/** How a call is retried. */
export interface RetryPolicy {
  /** Tries in all (the first included). @default 5 */
  readonly attempts?: number;
  /** The coordinator's address, named in the error when the last try fails. @default none */
  readonly address?: string;
  /** Called before each retry with the try that failed (1-based) and its error. @default nothing */
  readonly onRetry?: (attempt: number, error: GramfuseError) => void;
}

/** The delay before retry `attempt`: uniformly random in [0, min(8 s, 250 ms · 2^attempt)). */
export const backoffMs = (attempt: number): number => Math.random() * Math.min(8000, 250 * 2 ** attempt);

/** An error from a gRPC call (or already coded) as a GramfuseError. */
export const codedError = (error: unknown, address?: string): GramfuseError =>
  error instanceof GramfuseError ? error : errorFromGrpc(error as grpc.ServiceError, address);

/** Whether a coded error is worth another try: the link or the coordinator may come back. */
export const isRetryable = (error: GramfuseError): boolean =>
  error.code === ErrorCode.Unavailable || error.code === ErrorCode.DeadlineExceeded;

/** Runs `call`, retrying on retryable errors by the policy; the last error is thrown coded. */
export async function withRetries<T>(call: () => Promise<T>, policy: RetryPolicy = {}): Promise<T> {
  const attempts = policy.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const coded = codedError(error, policy.address);
      if (attempt >= attempts || !isRetryable(coded)) throw coded;
      policy.onRetry?.(attempt, coded);
      await new Promise((resolve) => setTimeout(resolve, backoffMs(attempt)));
    }
  }
}
