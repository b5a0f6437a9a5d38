/**
 * gramfuse's one error family. Every error a user can meet is a {@link GramfuseError} with a stable
 * `code` from {@link ErrorCode}; the message names the thing, the value found, what was expected, and
 * the next step. Codes map to gRPC statuses and CLI exit codes in exactly one table each (below).
 */

/** Stable error codes. Never rename one: scripts and operators match on them. */
export const ErrorCode = {
  /** A file or directory the user named does not exist. */
  FileNotFound: 'FILE_NOT_FOUND',
  /** A file that would be written exists already, and gramfuse never replaces it there (a download's side file). */
  FileExists: 'FILE_EXISTS',
  /** A path cannot be read or written (permissions, missing parent directory, disk full). */
  FileAccess: 'FILE_ACCESS',
  /** Bytes that should be an ONNX model do not decode as one. */
  OnnxMalformed: 'ONNX_MALFORMED',
  /** A tensor's external data file is missing or shorter than the tensor needs. */
  OnnxExternalData: 'ONNX_EXTERNAL_DATA',
  /** The graph uses a construct gramfuse cannot analyse safely; it is reported, never guessed. */
  OnnxUnsupportedGraph: 'ONNX_UNSUPPORTED_GRAPH',
  /** The model has no linear layer that RegMean could merge. */
  OnnxNoLinearLayers: 'ONNX_NO_LINEAR_LAYERS',
  /** A tensor uses an element type gramfuse has no entry for. */
  UnsupportedDtype: 'UNSUPPORTED_DTYPE',
  /** onnxruntime failed to create a session or run the model. */
  RuntimeFailed: 'RUNTIME_FAILED',
  /** A data file (JSONL/CSV) or tokenizer is malformed or has no usable rows. */
  InvalidData: 'INVALID_DATA',
  /** The requested execution provider (e.g. CUDA) cannot be used on this machine. */
  DeviceUnavailable: 'DEVICE_UNAVAILABLE',
  /** The disclosure plan breaks the owner's policy (too few rows, a layer not allowed): nothing is sent. */
  PolicyViolation: 'POLICY_VIOLATION',
  /** A statistics bundle is incomplete, malformed or fails its SHA-256 checks. */
  BundleInvalid: 'BUNDLE_INVALID',
  /** No job with that id on the coordinator. */
  JobNotFound: 'JOB_NOT_FOUND',
  /** The caller's certificate identity is not allowed to do this (not a participant, not a job creator). */
  NotAuthorized: 'NOT_AUTHORIZED',
  /** The job no longer accepts this (already solved, failed, or not yet open). */
  JobClosed: 'JOB_CLOSED',
  /** An uploaded chunk or statistic does not verify (hash, size, shape, unknown statistic). */
  UploadInvalid: 'UPLOAD_INVALID',
  /** A remote call failed or timed out. */
  Unavailable: 'UNAVAILABLE',
  /** An audit ledger fails verification: a changed, missing, reordered, inserted or partial record. */
  AuditInvalid: 'AUDIT_INVALID',
  /** Command-line flags or a config file failed validation. */
  InvalidArgument: 'INVALID_ARGUMENT',
  /** Models that must share an architecture do not (fingerprints differ). */
  FingerprintMismatch: 'FINGERPRINT_MISMATCH',
  /** A number that must be finite is NaN or infinite. */
  NonFinite: 'NON_FINITE',
  /** A linear system could not be solved even with the maximum diagonal jitter. */
  SolveFailed: 'SOLVE_FAILED',
  /** A deadline passed: a remote call's, or a job's (its owners did not all upload in time). */
  DeadlineExceeded: 'DEADLINE_EXCEEDED',
  /** The disk (or quota) is full: nothing half-written was kept; free space and retry. */
  StorageFull: 'STORAGE_FULL',
  /** A private key file is readable or writable by group or others: refused until it is `chmod 600`. */
  KeyFileExposed: 'KEY_FILE_EXPOSED',
  /** A limit of the coordinator's was reached (bytes held, open jobs, concurrent solves): not retried. */
  ResourceExhausted: 'RESOURCE_EXHAUSTED',
  /** A file of the coordinator's state (or a ledger) is corrupt: the job is quarantined, the rest go on. */
  StateCorrupt: 'STATE_CORRUPT',
  /**
   * ONNX parameters and a Hugging Face checkpoint's tensors do not map one to one (a parameter with no name, a name
   * two parameters claim, a checkpoint that is not this model's): nothing is written.
   */
  CheckpointMismatch: 'CHECKPOINT_MISMATCH',
  /** A Hugging Face directory's `config.json` names an architecture (or a setting of one) the builder does not build. */
  HfUnsupported: 'HF_UNSUPPORTED',
  /**
   * Secure aggregation: a value past the power-of-two bound its owner declared for the fixed-point encoding (the sum
   * could overflow Z/2⁶⁴), or a request for both kinds of secret share of one owner: refused at the owner.
   */
  SecureAggregation: 'SECURE_AGGREGATION',
  /** `gramfuse doctor` found at least one check failing on this machine (each printed with its fix). */
  PreflightFailed: 'PREFLIGHT_FAILED',
  /** Something that should never happen did; a bug in gramfuse. */
  Internal: 'INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Facts attached to an error, for programs (JSON output, gRPC trailers, audit records). */
export type ErrorFacts = Readonly<Record<string, string | number | boolean | null>>;

export interface GramfuseErrorOptions {
  /** Structured facts: the path, the tensor, the value found. */
  readonly facts?: ErrorFacts;
  /** The lower-level error this one explains. */
  readonly cause?: unknown;
}

export class GramfuseError extends Error {
  readonly code: ErrorCode;
  readonly facts: ErrorFacts;

  constructor(code: ErrorCode, message: string, options: GramfuseErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'GramfuseError';
    this.code = code;
    this.facts = options.facts ?? {};
  }

  /** One line for a terminal: `CODE: message`. */
  toLine(): string {
    return `${this.code}: ${this.message}`;
  }

  toJSON(): { code: ErrorCode; message: string; facts: ErrorFacts } {
    return { code: this.code, message: this.message, facts: this.facts };
  }
}

/** True for any gramfuse error, optionally of one code. */
export function isGramfuseError(value: unknown, code?: ErrorCode): value is GramfuseError {
  return value instanceof GramfuseError && (code === undefined || value.code === code);
}

/** Wraps anything thrown into a GramfuseError; unknown errors become INTERNAL, never a leaked stack. */
export function toGramfuseError(value: unknown): GramfuseError {
  if (value instanceof GramfuseError) return value;
  const message = value instanceof Error ? value.message : String(value);
  return new GramfuseError(ErrorCode.Internal, `unexpected error: ${message}; please report it`, {
    cause: value,
  });
}

/** CLI exit code per error code: the one table. 0 is success, 1 is reserved for INTERNAL. */
export const exitCodeByErrorCode: Readonly<Record<ErrorCode, number>> = {
  INTERNAL: 1,
  INVALID_ARGUMENT: 2,
  INVALID_DATA: 5,
  FILE_NOT_FOUND: 3,
  FILE_ACCESS: 4,
  FILE_EXISTS: 24,
  ONNX_MALFORMED: 10,
  ONNX_EXTERNAL_DATA: 11,
  ONNX_UNSUPPORTED_GRAPH: 12,
  ONNX_NO_LINEAR_LAYERS: 13,
  UNSUPPORTED_DTYPE: 14,
  RUNTIME_FAILED: 15,
  DEVICE_UNAVAILABLE: 16,
  FINGERPRINT_MISMATCH: 20,
  NON_FINITE: 21,
  SOLVE_FAILED: 22,
  POLICY_VIOLATION: 30,
  JOB_NOT_FOUND: 40,
  NOT_AUTHORIZED: 41,
  JOB_CLOSED: 42,
  UPLOAD_INVALID: 43,
  UNAVAILABLE: 44,
  AUDIT_INVALID: 50,
  BUNDLE_INVALID: 31,
  DEADLINE_EXCEEDED: 45,
  STORAGE_FULL: 6,
  KEY_FILE_EXPOSED: 7,
  RESOURCE_EXHAUSTED: 8,
  STATE_CORRUPT: 9,
  CHECKPOINT_MISMATCH: 23,
  HF_UNSUPPORTED: 25,
  SECURE_AGGREGATION: 32,
  PREFLIGHT_FAILED: 60,
};

/** Node's filesystem errors, translated for the person who has to fix the path. */
/**
 * A schema's problems (zod issues) as one line: `dot.path: message` each, `(root)` for the value itself, at most
 * `limit` of them and a count of the rest — never a raw zod dump.
 */
export function schemaProblems(
  issues: readonly { readonly path: readonly PropertyKey[]; readonly message: string }[],
  limit = Infinity,
): string {
  const shown = issues.slice(0, limit).map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`);
  return `${shown.join('; ')}${issues.length > limit ? `; and ${issues.length - limit} more` : ''}`;
}

export function fileError(error: unknown, path: string, doing: string): GramfuseError {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') {
    return new GramfuseError(ErrorCode.FileNotFound, `${path}: no such file or directory (while ${doing}); check the path`, {
      facts: { path },
      cause: error,
    });
  }
  const reason = error instanceof Error ? error.message : String(error);
  if (code === 'ERR_FS_FILE_TOO_LARGE') {
    return new GramfuseError(
      ErrorCode.InvalidData,
      `${path}: larger than 2 GiB, which gramfuse still reads whole here (while ${doing}); files this large need the streamed path of the LLM-scale work`,
      { facts: { path, errno: code }, cause: error },
    );
  }
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new GramfuseError(
      ErrorCode.StorageFull,
      `${path}: the disk is full (while ${doing}); nothing partial was kept: free space and retry`,
      {
        facts: { path, errno: code },
        cause: error,
      },
    );
  }
  return new GramfuseError(ErrorCode.FileAccess, `${path}: cannot ${doing}: ${reason}`, {
    facts: { path, errno: code ?? null },
    cause: error,
  });
}

/** gRPC status code per error code: the one table (numeric values of grpc.status). */
export const grpcStatusByErrorCode: Readonly<Record<ErrorCode, number>> = {
  INTERNAL: 13,
  INVALID_ARGUMENT: 3,
  INVALID_DATA: 3,
  FILE_NOT_FOUND: 5,
  FILE_ACCESS: 13,
  FILE_EXISTS: 6,
  ONNX_MALFORMED: 3,
  ONNX_EXTERNAL_DATA: 3,
  ONNX_UNSUPPORTED_GRAPH: 3,
  ONNX_NO_LINEAR_LAYERS: 3,
  UNSUPPORTED_DTYPE: 3,
  RUNTIME_FAILED: 13,
  DEVICE_UNAVAILABLE: 9,
  FINGERPRINT_MISMATCH: 9,
  NON_FINITE: 3,
  SOLVE_FAILED: 13,
  POLICY_VIOLATION: 9,
  BUNDLE_INVALID: 3,
  JOB_NOT_FOUND: 5,
  NOT_AUTHORIZED: 7,
  JOB_CLOSED: 9,
  UPLOAD_INVALID: 3,
  UNAVAILABLE: 14,
  AUDIT_INVALID: 15,
  DEADLINE_EXCEEDED: 4,
  STORAGE_FULL: 8,
  KEY_FILE_EXPOSED: 13,
  RESOURCE_EXHAUSTED: 8,
  STATE_CORRUPT: 9,
  CHECKPOINT_MISMATCH: 9,
  HF_UNSUPPORTED: 3,
  SECURE_AGGREGATION: 9,
  PREFLIGHT_FAILED: 9,
};

/** The error code carried by a gRPC status (its details start with `CODE: `), or INTERNAL. */
export function errorFromGrpc(status: { code?: number; details?: string; message?: string }, address?: string): GramfuseError {
  const details = status.details ?? status.message ?? '';
  const match = /^([A-Z_]+): (.*)$/s.exec(details);
  const codes = Object.values(ErrorCode) as string[];
  if (match !== null && codes.includes(match[1]!)) return new GramfuseError(match[1] as ErrorCode, match[2]!);
  if (status.code === 4)
    return new GramfuseError(ErrorCode.DeadlineExceeded, `the coordinator did not answer before the call's deadline: ${details}`);
  if (status.code === 14) {
    // grpc-js says e.g. "No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: "
    const reason =
      /Last error: (?:Error: )?(.*?)(?:\. Resolution note:.*)?$/s.exec(details)?.[1] ?? details.replace(/\s*Resolution note:.*$/s, '');
    return new GramfuseError(
      ErrorCode.Unavailable,
      `the coordinator${address === undefined ? '' : ` at ${address}`} is unreachable (${reason.trim() || 'no connection'}); check the address and port, that \`gramfuse coordinator serve\` is running there, and that both sides' certificates come from the same CA (--tls-ca)`,
      address === undefined ? {} : { facts: { address } },
    );
  }
  return new GramfuseError(ErrorCode.Internal, `remote error (gRPC status ${status.code ?? '?'}): ${details}`);
}
