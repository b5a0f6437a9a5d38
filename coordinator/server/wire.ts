// The wire edge of the coordinator: proto messages ↔ domain values, and gRPC status ↔ coded errors. Undecodable
// requests become coded UPLOAD_INVALID errors here, before any handler sees them.
import type * as grpc from '@grpc/grpc-js';

import { federation } from '../../proto/index.js';
import { ErrorCode, faultInjected, GramfuseError, grpcStatusByErrorCode, toGramfuseError } from '../../shared/index.js';
import type { ChunkIn, JobView, Receipt } from '../jobs/index.js';

/** Maps any error to a gRPC status with `CODE: message` details (the one table is in shared/errors.ts). */
export function toStatus(error: unknown): Partial<grpc.StatusObject> {
  const coded = toGramfuseError(error);
  return { code: grpcStatusByErrorCode[coded.code], details: `${coded.code}: ${coded.message}` };
}

export function jobToProto(view: JobView): federation.JobStatus {
  // Fault injection (tests) `secure.terms-change`: once an owner completed, a coordinator that names itself a participant
  // of a secure job, so that an owner rerun would take it for a peer; the agent must hold on to what it approved.
  const lie = view.spec.privacy.secureAggregation && view.completed.length > 0 && faultInjected('secure.terms-change');
  return federation.JobStatus.fromPartial({
    jobId: view.spec.id,
    state: view.state,
    fingerprint: view.fingerprint,
    participants: [...view.spec.participants, ...(lie ? ['coordinator'] : [])],
    completed: [...view.completed],
    quorum: view.quorum,
    failureCode: view.failure?.code ?? '',
    failureMessage: view.failure?.message ?? '',
    mergeSpecJson: JSON.stringify(view.spec.merge),
    policyJson: JSON.stringify(view.spec.policy),
    privacyJson: JSON.stringify(view.spec.privacy),
    receiptPublicKey: view.receiptPublicKey,
    resultSha256: view.result?.sha256 ?? '',
    resultBytes: BigInt(view.result?.bytes ?? 0),
    solveGroups: (view.solveGroups ?? []).map((g) => ({ ...g })),
  });
}

export function receiptToProto(r: Receipt): federation.Receipt {
  return federation.Receipt.fromPartial({
    jobId: r.jobId,
    owner: r.owner,
    statisticId: r.statisticId,
    sha256: r.sha256,
    bytes: BigInt(r.bytes),
    committedAt: r.committedAt,
    signature: r.signature,
  });
}

export function chunkFromProto(c: federation.Chunk): ChunkIn {
  return {
    jobId: c.jobId,
    statisticId: c.statisticId,
    dtype: c.dtype,
    shape: c.shape.map(Number),
    packing: c.packing,
    index: c.index,
    count: c.count,
    offset: Number(c.offset),
    data: c.data,
    sha256: c.sha256,
  };
}

/** A chunk message from its wire bytes; bytes that are not a valid message are UPLOAD_INVALID (the fuzz tests' entry). */
export function decodeChunk(bytes: Uint8Array): ChunkIn {
  let message: federation.Chunk;
  try {
    message = federation.Chunk.decode(bytes);
  } catch (error) {
    throw new GramfuseError(ErrorCode.UploadInvalid, `a chunk message that is not valid protobuf (${(error as Error).message}); resend it`);
  }
  return chunkFromProto(message);
}

const UNDECODABLE = Symbol('undecodable request');

/**
 * The service definition with gramfuse's own coded decoder: a request that is not a valid message becomes a
 * marker the handlers turn into INVALID_ARGUMENT naming the method and the fix, instead of grpc-js's bare
 * `INTERNAL: Error deserializing request`.
 */
export function withCodedDecoding<S extends grpc.ServiceDefinition>(service: S): S {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(service)) {
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return method.requestDeserialize(bytes) as unknown;
        } catch (error) {
          return {
            [UNDECODABLE]: new GramfuseError(
              ErrorCode.InvalidArgument,
              `${method.path}: the request is not a valid protobuf message (${(error as Error).message}); send messages built from proto/gramfuse/v1/federation.proto`,
              { facts: { method: method.path } },
            ),
          };
        }
      },
    };
  }
  return out as S;
}

/** Throws the coded error of a request the decoder could not read. */
export function decoded<T>(request: T): T {
  const invalid = (request as { [UNDECODABLE]?: GramfuseError } | undefined)?.[UNDECODABLE];
  if (invalid !== undefined) throw invalid;
  return request;
}

/** Chunks received but not yet handled on one upload stream before the stream is paused, and cancelled. */

/** What the coordinator holds of an owner's statistics (join and state answer alike), as the wire message. */
export function uploadStateToProto(
  jobId: string,
  held: ReadonlyMap<string, { held: number[]; committed: boolean; receipt?: Receipt }>,
  uploadWindow: number,
): federation.UploadState {
  return federation.UploadState.fromPartial({
    jobId,
    uploadWindow,
    statistics: [...held].map(([statisticId, s]) => ({
      statisticId,
      held: s.held,
      committed: s.committed,
      ...(s.receipt === undefined ? {} : { receipt: receiptToProto(s.receipt) }),
    })),
  });
}
