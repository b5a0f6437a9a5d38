// The one place in shared/ (and so for both sides) that imports onnxruntime-node.
import * as ort from 'onnxruntime-node';

import { ModelProto } from '../../proto/index.js';
import { ErrorCode, GramfuseError } from '../errors.js';
import type { OnnxModel } from './model-io.js';

export type { InferenceSession, Tensor } from 'onnxruntime-node';
export const OrtTensor = ort.Tensor;

/** Options for an onnxruntime session. */
export interface SessionOptions {
  /** Execution provider. Default `cpu`. */
  readonly device?: 'cpu' | 'cuda';
  /** Threads inside one operator. Default: onnxruntime's choice (all cores). */
  readonly intraOpThreads?: number;
}

/** Creates a session from a model in memory (serialized here) or from bytes. */
export async function createSession(source: OnnxModel | Uint8Array, options: SessionOptions = {}): Promise<ort.InferenceSession> {
  const bytes = source instanceof Uint8Array ? source : ModelProto.encode(source.proto).finish();
  const label = source instanceof Uint8Array ? '<bytes>' : source.source;
  try {
    return await ort.InferenceSession.create(bytes, {
      executionProviders: [options.device ?? 'cpu'],
      logSeverityLevel: 3,
      graphOptimizationLevel: 'all',
      ...(options.intraOpThreads === undefined ? {} : { intraOpNumThreads: options.intraOpThreads }),
    });
  } catch (error) {
    throw new GramfuseError(ErrorCode.RuntimeFailed, `${label}: onnxruntime could not load the model: ${(error as Error).message}`, {
      facts: { model: label },
      cause: error,
    });
  }
}

/** Runs a session, turning runtime failures into coded errors. */
export async function runSession(
  session: ort.InferenceSession,
  feeds: Record<string, ort.Tensor>,
  label: string,
): Promise<ort.InferenceSession.OnnxValueMapType> {
  try {
    return await session.run(feeds);
  } catch (error) {
    throw new GramfuseError(ErrorCode.RuntimeFailed, `${label}: onnxruntime failed to run the model: ${(error as Error).message}`, {
      facts: { model: label },
      cause: error,
    });
  }
}
