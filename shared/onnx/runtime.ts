// The one place in shared/ (and so for both sides) that imports onnxruntime-node.
import { constants, existsSync } from 'node:fs';
import { access } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

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
  /**
   * onnxruntime's CPU memory arena keeps the largest buffers it ever allocated; `false` returns them after
   * each run (the solver's kernels, whose peak would otherwise stay resident). Default true.
   */
  readonly memoryArena?: boolean;
  /**
   * Whether onnxruntime's intra-op threads spin (busy-wait) after a run for the next one. `false` for callers
   * that do JS work between short runs (the solver factors diagonal blocks in JS): spinning threads take the
   * cores that work needs, which made the solve 2-3x slower on 2 cores (docs/BENCHMARKS.md). Default: onnxruntime's (spin).
   */
  readonly allowSpinning?: boolean;
}

/** Creates a session from a model in memory (serialized here) or from bytes. */
export async function createSession(source: OnnxModel | Uint8Array, options: SessionOptions = {}): Promise<ort.InferenceSession> {
  const bytes = source instanceof Uint8Array ? source : ModelProto.encode(source.proto).finish();
  const label = source instanceof Uint8Array ? '<bytes>' : source.source;
  // A model given as bytes finds its side files through the folder ORT is told of: onnxruntime reads the tensors
  // itself, so they are never read into JS (one copy of the weights, and side files past 2 GiB load).
  let externalFolder: string | undefined;
  if (!(source instanceof Uint8Array) && source.baseDir !== undefined) {
    const locations = new Set<string>();
    for (const tensor of source.proto.graph?.initializer ?? []) {
      if (tensor.dataLocation !== 1) continue;
      const location = tensor.externalData.find((e) => e.key === 'location')?.value;
      if (location !== undefined) locations.add(location);
    }
    for (const location of locations) {
      const path = join(source.baseDir, location);
      try {
        await access(path, constants.R_OK);
      } catch (error) {
        throw new GramfuseError(
          ErrorCode.OnnxExternalData,
          `${label}: external data file ${path} cannot be read (${(error as Error).message}); copy it next to the model`,
          { facts: { path }, cause: error },
        );
      }
    }
    if (locations.size > 0) externalFolder = source.baseDir;
  }
  try {
    return await ort.InferenceSession.create(bytes, {
      extra: {
        session: {
          ...(externalFolder === undefined ? {} : { model_external_initializers_file_folder_path: externalFolder }),
          ...(options.allowSpinning === false ? { 'intra_op.allow_spinning': '0', 'inter_op.allow_spinning': '0' } : {}),
        },
      },
      executionProviders: [options.device ?? 'cpu'],
      logSeverityLevel: 3,
      graphOptimizationLevel: 'all',
      ...(options.intraOpThreads === undefined ? {} : { intraOpNumThreads: options.intraOpThreads }),
      ...(options.memoryArena === false ? { enableCpuMemArena: false, enableMemPattern: false } : {}),
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
  fetches?: Record<string, ort.Tensor>,
): Promise<ort.InferenceSession.OnnxValueMapType> {
  try {
    // With `fetches`, onnxruntime writes those outputs into the given tensors (pre-allocated, reused batch after batch).
    return await (fetches === undefined ? session.run(feeds) : session.run(feeds, fetches));
  } catch (error) {
    throw new GramfuseError(ErrorCode.RuntimeFailed, `${label}: onnxruntime failed to run the model: ${(error as Error).message}`, {
      facts: { model: label },
      cause: error,
    });
  }
}

/** Where onnxruntime-node looks for the CUDA provider libraries, and which of them are missing. */
export function cudaProviderLibraries(): { readonly dir: string; readonly missing: string[] } {
  const packageJson = createRequire(import.meta.url).resolve('onnxruntime-node/package.json');
  const dir = join(dirname(packageJson), 'bin', 'napi-v6', process.platform, process.arch);
  const missing = ['libonnxruntime_providers_shared.so', 'libonnxruntime_providers_cuda.so'].filter((f) => !existsSync(join(dir, f)));
  return { dir, missing };
}

/** The execution provider a session will use, and why (said to the user). */
export interface DeviceChoice {
  readonly device: 'cpu' | 'cuda';
  readonly reason: string;
}

/**
 * `auto`: CUDA when its provider loads, else CPU (and says why); `cuda`: CUDA or a DEVICE_UNAVAILABLE
 * error naming what is missing; `cpu`: CPU. The check looks for the provider libraries before asking
 * onnxruntime, so a machine without them gets a plain message, not a loader error.
 */
export async function resolveDevice(
  requested: 'auto' | 'cpu' | 'cuda',
  probeModel: Uint8Array | (() => Uint8Array),
): Promise<DeviceChoice> {
  if (requested === 'cpu') return { device: 'cpu', reason: 'CPU requested' };
  const { dir, missing } = cudaProviderLibraries();
  let problem: string | undefined;
  if (missing.length > 0) {
    problem = `the CUDA provider is not installed (${missing.join(', ')} missing in ${dir}); install onnxruntime-node's CUDA provider libraries there on a machine with an NVIDIA GPU`;
  } else {
    try {
      // The probe's bytes are made only here: a large model is not serialized just to learn the provider is missing.
      const bytes = typeof probeModel === 'function' ? probeModel() : probeModel;
      const session = await ort.InferenceSession.create(bytes, { executionProviders: ['cuda'], logSeverityLevel: 3 });
      await session.release();
    } catch (error) {
      problem = `the CUDA provider failed to start (${(error as Error).message}); check the NVIDIA driver and the CUDA libraries`;
    }
  }
  if (problem === undefined) return { device: 'cuda', reason: 'CUDA provider loaded' };
  if (requested === 'auto') return { device: 'cpu', reason: `using CPU: ${problem}` };
  throw new GramfuseError(ErrorCode.DeviceUnavailable, `--device cuda: ${problem}; or use --device cpu`, {
    facts: { device: 'cuda', dir },
  });
}
