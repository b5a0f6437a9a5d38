// Hugging Face checkpoints in and out: reading `model.safetensors` (or a sharded index) by the format's spec, naming
// an ONNX export's parameters by the checkpoint's tensors (matched by content hash, so linear in size), and writing a
// checkpoint directory transformers loads (`from_pretrained`): names, layouts and dtypes of the checkpoint.
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

import { decodeFloats, type Dtype, dtypeFromOnnx, dtypeInfo, encodeFloats, type FloatDtype, floatWidth, isFloatDtype } from '../dtypes.js';
import { ErrorCode, fileError, GramfuseError } from '../errors.js';
import {
  type CheckpointEntry,
  type CheckpointMapping,
  checkUnique,
  type LinearLayer,
  MAX_TENSOR_READ_BYTES,
  type OnnxModel,
  type Parameter,
  readParameterValues,
  structuralCheckpointNames,
  tensorByteSlices,
  tensorBytes,
} from '../onnx/index.js';
import { readSafetensorsHeader, SAFETENSORS_DTYPE, writeSafetensorsFrom } from './safetensors.js';

/** transformers shards a checkpoint past 5 GB (`max_shard_size="5GB"`, decimal). */
export const HF_SHARD_BYTES = 5_000_000_000;

const DTYPE_OF: Readonly<Record<string, Dtype>> = { F64: 'float64', F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/** One tensor of a checkpoint on disk. */
export interface CheckpointTensor {
  readonly name: string;
  readonly file: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly begin: number;
  readonly end: number;
}

export interface HfCheckpoint {
  readonly dir: string;
  readonly tensors: ReadonlyMap<string, CheckpointTensor>;
  /** config.json's text, when the directory has one. */
  readonly config: string | undefined;
}

const invalidCheckpoint =
  (path: string) =>
  (reason: string): GramfuseError =>
    new GramfuseError(ErrorCode.CheckpointMismatch, `${path}: not a readable safetensors checkpoint: ${reason}`, { facts: { path } });

/** A checkpoint directory: `model.safetensors`, or `model.safetensors.index.json` and its shards; `config.json` if any. */
export async function readHfCheckpoint(dir: string): Promise<HfCheckpoint> {
  const indexPath = join(dir, 'model.safetensors.index.json');
  const single = join(dir, 'model.safetensors');
  let files: string[];
  const indexText = await readFile(indexPath, 'utf8').catch(() => undefined);
  if (indexText !== undefined) {
    let weightMap: unknown;
    try {
      weightMap = (JSON.parse(indexText) as { weight_map?: unknown }).weight_map;
    } catch (error) {
      throw invalidCheckpoint(indexPath)(`not JSON (${(error as Error).message})`);
    }
    if (typeof weightMap !== 'object' || weightMap === null) throw invalidCheckpoint(indexPath)('no weight_map');
    files = [...new Set(Object.values(weightMap as Record<string, unknown>).map(String))];
    if (files.some((f) => f !== basename(f))) throw invalidCheckpoint(indexPath)('a shard outside the checkpoint directory');
  } else if (await stat(single).catch(() => undefined)) {
    files = ['model.safetensors'];
  } else {
    const found = await readdir(dir).catch((error: unknown) => {
      throw fileError(error, dir, 'reading the checkpoint directory');
    });
    throw new GramfuseError(
      ErrorCode.FileNotFound,
      `${dir}: no model.safetensors or model.safetensors.index.json (found: ${found.slice(0, 8).join(', ') || 'nothing'}); save the checkpoint with save_pretrained(safe_serialization=True)`,
      { facts: { path: dir } },
    );
  }
  const tensors = new Map<string, CheckpointTensor>();
  for (const file of files) {
    const path = join(dir, file);
    const { entries } = await readSafetensorsHeader(path, invalidCheckpoint(path));
    for (const [name, e] of entries) {
      if (tensors.has(name)) throw invalidCheckpoint(path)(`tensor ${name} is in two shards`);
      tensors.set(name, { name, file: path, dtype: e.dtype, shape: e.shape, begin: e.begin, end: e.end });
    }
  }
  const config = await readFile(join(dir, 'config.json'), 'utf8').catch(() => undefined);
  return { dir, tensors, config };
}

/** What a checkpoint tensor's or a parameter's values are hashed a slice at a time in (a 7B model's embeddings pass 2 GiB). */
const HASH_SLICE_BYTES = 64 * 2 ** 20;

/** `digest` of a checkpoint tensor, read from its file a slice at a time: memory holds one slice, whatever its size. */
async function checkpointTensorDigest(tensor: CheckpointTensor): Promise<string> {
  const hash = createHash('sha256').update(`${tensor.dtype}[${tensor.shape.join(',')}]`);
  const handle = await open(tensor.file, 'r').catch((error: unknown) => {
    throw fileError(error, tensor.file, 'reading the checkpoint');
  });
  try {
    const slice = new Uint8Array(Math.max(1, Math.min(HASH_SLICE_BYTES, tensor.end - tensor.begin)));
    for (let at = tensor.begin; at < tensor.end;) {
      const { bytesRead } = await handle.read(slice, 0, Math.min(slice.byteLength, tensor.end - at), at);
      if (bytesRead === 0) throw invalidCheckpoint(tensor.file)(`tensor ${tensor.name} is cut short`);
      hash.update(slice.subarray(0, bytesRead));
      at += bytesRead;
    }
  } finally {
    await handle.close();
  }
  return hash.digest('hex');
}

/** A rank-2 tensor's bytes with rows and columns swapped ([r, c] → [c, r]), element width `width` (bits kept). */
export function transposeBytes(bytes: Uint8Array, rows: number, cols: number, width: number): Uint8Array {
  const out = new Uint8Array(bytes.byteLength);
  if (width === 2 || width === 4 || width === 8) {
    // Whole elements as 16- or 32-bit lanes (two lanes for 8 bytes): a copy, so the source's alignment never matters.
    const lanes = width === 8 ? 2 : 1;
    const Lane = width === 2 ? Uint16Array : Uint32Array;
    const src = new Lane(new Uint8Array(bytes).buffer);
    const dst = new Lane(out.buffer);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) for (let l = 0; l < lanes; l++) dst[(c * rows + r) * lanes + l] = src[(r * cols + c) * lanes + l]!;
    return out;
  }
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) out.set(bytes.subarray((r * cols + c) * width, (r * cols + c + 1) * width), (c * rows + r) * width);
  return out;
}

const digest = (dtype: string, shape: readonly number[], bytes: Uint8Array): string =>
  createHash('sha256')
    .update(`${dtype}[${shape.join(',')}]`)
    .update(bytes)
    .digest('hex');

/**
 * `digest` of a parameter stored in `dtype` and shape `shape` (its own): read a slice at a time, so a parameter past
 * what one read holds (2 GiB) is hashed too. Only for a parameter whose dtype is the checkpoint's (no conversion).
 */
function parameterDigestInSlices(model: OnnxModel, parameter: Parameter, dtype: string): string {
  const tensor = model.proto.graph!.initializer.find((t) => t.name === parameter.name)!;
  const hash = createHash('sha256').update(`${dtype}[${parameter.shape.join(',')}]`);
  for (const slice of tensorByteSlices(model, tensor, HASH_SLICE_BYTES)) hash.update(slice);
  return hash.digest('hex');
}

/** A parameter's values as the bytes of a checkpoint dtype (exact when the dtypes agree). */
function bytesAs(model: OnnxModel, parameter: Parameter, dtype: string): Uint8Array {
  const tensor = model.proto.graph!.initializer.find((t) => t.name === parameter.name)!;
  const target = DTYPE_OF[dtype];
  if (target === undefined || target === parameter.dtype) return tensorBytes(model, tensor);
  if (!isFloatDtype(target)) return tensorBytes(model, tensor);
  return encodeFloats(readParameterValues(model, parameter.name), target);
}

/**
 * Names a model's parameters by the checkpoint whose values it holds: every float parameter is hashed as stored and,
 * if rank 2, transposed, in the checkpoint's dtype; each hash is looked up among the checkpoint's tensor hashes.
 * Where several checkpoint tensors hold the same values (untouched LayerNorm weights), the structural name decides.
 * Every parameter must match (scalars the exporter folded excepted) and every float checkpoint tensor must be
 * matched: anything else is CHECKPOINT_MISMATCH naming the tensors.
 */
export async function matchCheckpointByValue(
  model: OnnxModel,
  analysis: { readonly parameters: readonly Parameter[]; readonly linearLayers: readonly LinearLayer[] },
  checkpoint: HfCheckpoint,
): Promise<CheckpointMapping> {
  let structural: CheckpointMapping | undefined;
  try {
    structural = structuralCheckpointNames(model, analysis);
  } catch {
    structural = undefined; // value matching does not need the structure to be complete
  }
  const structuralName = new Map(structural?.entries.map((e) => [e.parameter, e.name]));
  const byHash = new Map<string, string[]>();
  const dtypes = new Set<string>();
  // A digest covers the shape, so a checkpoint tensor no parameter has the shape of (as stored or transposed) can
  // match nothing: it is not read at all.
  const shapes = new Set(
    analysis.parameters.flatMap((p) => [p.shape.join(','), ...(p.shape.length === 2 ? [`${p.shape[1]},${p.shape[0]}`] : [])]),
  );
  for (const tensor of checkpoint.tensors.values()) {
    if (DTYPE_OF[tensor.dtype] === undefined) continue; // integer buffers are not parameters
    dtypes.add(tensor.dtype);
    if (!shapes.has(tensor.shape.join(','))) continue;
    const key = await checkpointTensorDigest(tensor);
    byHash.set(key, [...(byHash.get(key) ?? []), tensor.name]);
  }
  const entries: CheckpointEntry[] = [];
  const unmatched: string[] = [];
  const ambiguous: string[] = [];
  const constants = new Set(structural?.constants ?? []);
  for (const p of analysis.parameters) {
    const candidates: { name: string; transpose: boolean; shape: readonly number[]; dtype: string }[] = [];
    for (const dtype of dtypes) {
      if (p.bytes > MAX_TENSOR_READ_BYTES) {
        // Too large to hold whole: hashed as stored, a slice at a time (a transposed or converted copy would need it
        // whole); a checkpoint that holds it transposed or in another dtype leaves it unmatched, and says so below.
        if (DTYPE_OF[dtype] !== p.dtype) continue;
        for (const name of byHash.get(parameterDigestInSlices(model, p, dtype)) ?? [])
          candidates.push({ name, transpose: false, shape: p.shape, dtype });
        continue;
      }
      const bytes = bytesAs(model, p, dtype);
      for (const name of byHash.get(digest(dtype, p.shape, bytes)) ?? [])
        candidates.push({ name, transpose: false, shape: p.shape, dtype });
      if (p.shape.length === 2 && p.shape[0] !== 1 && p.shape[1] !== 1) {
        const shape = [p.shape[1]!, p.shape[0]!];
        const width = bytes.byteLength / (p.shape[0]! * p.shape[1]!);
        for (const name of byHash.get(digest(dtype, shape, transposeBytes(bytes, p.shape[0]!, p.shape[1]!, width))) ?? [])
          candidates.push({ name, transpose: true, shape, dtype });
      }
    }
    const preferred = candidates.filter((c) => c.name === structuralName.get(p.name));
    const chosen = candidates.length === 1 ? candidates : preferred.length === 1 ? preferred : [];
    if (chosen.length === 1) {
      const c = chosen[0]!;
      entries.push({ parameter: p.name, name: c.name, transpose: c.transpose, shape: c.shape, dtype: DTYPE_OF[c.dtype]! });
    } else if (candidates.length > 1) ambiguous.push(`${p.name} (${candidates.map((c) => c.name).join(' or ')})`);
    else if (!constants.has(p.name)) unmatched.push(p.name);
  }
  const claimed = new Set(entries.map((e) => e.name));
  const unclaimed = [...checkpoint.tensors.values()]
    .filter((t) => DTYPE_OF[t.dtype] !== undefined && !claimed.has(t.name))
    .map((t) => t.name);
  const problems = [
    unmatched.length > 0 ? `${unmatched.length} parameters match no checkpoint tensor (${unmatched.slice(0, 4).join(', ')})` : '',
    ambiguous.length > 0 ? `${ambiguous.length} parameters match several (${ambiguous.slice(0, 2).join('; ')})` : '',
    unclaimed.length > 0 ? `${unclaimed.length} checkpoint tensors match no parameter (${unclaimed.slice(0, 4).join(', ')})` : '',
  ].filter((s) => s !== '');
  if (problems.length > 0)
    throw new GramfuseError(
      ErrorCode.CheckpointMismatch,
      `${model.source} and the checkpoint ${checkpoint.dir} do not hold the same tensors: ${problems.join('; ')}. Give the checkpoint this ONNX file was exported from`,
      { facts: { unmatched: unmatched.length, ambiguous: ambiguous.length, unclaimed: unclaimed.length } },
    );
  checkUnique(entries, model.source);
  return { entries, constants: [...constants], prefix: structural?.prefix ?? null, source: 'checkpoint' };
}

/** Checks names from the structure against a checkpoint's keys, shapes (and takes its dtypes). */
export function alignWithCheckpoint(mapping: CheckpointMapping, checkpoint: HfCheckpoint, source: string): CheckpointMapping {
  const problems: string[] = [];
  const entries = mapping.entries.map((e) => {
    const t = checkpoint.tensors.get(e.name);
    if (t === undefined) problems.push(`${e.name} is not in the checkpoint`);
    else if (t.shape.join(',') !== e.shape.join(','))
      problems.push(`${e.name} is [${t.shape.join(', ')}] there, [${e.shape.join(', ')}] here`);
    const dtype = t === undefined ? undefined : DTYPE_OF[t.dtype];
    return dtype === undefined ? e : { ...e, dtype };
  });
  const names = new Set(entries.map((e) => e.name));
  for (const t of checkpoint.tensors.values())
    if (DTYPE_OF[t.dtype] !== undefined && !names.has(t.name)) problems.push(`${t.name} has no parameter`);
  if (problems.length > 0)
    throw new GramfuseError(
      ErrorCode.CheckpointMismatch,
      `${source}: the checkpoint ${checkpoint.dir} is not this model's: ${problems.slice(0, 4).join('; ')}${problems.length > 4 ? ` (${problems.length} problems)` : ''}`,
      { facts: { problems: problems.length } },
    );
  return { ...mapping, entries };
}

export interface HfOutput {
  /** config.json's text (from the checkpoint). */
  readonly config?: string;
  /** Files copied in beside the weights (tokenizer.json, tokenizer_config.json, …). */
  readonly copy?: readonly string[];
  /** README.md: the model card. */
  readonly card?: string;
  /** @default HF_SHARD_BYTES */
  readonly shardBytes?: number;
}

/**
 * Writes a checkpoint directory from `model`'s parameter values under `mapping`'s names, layouts and dtypes:
 * `model.safetensors` (or shards of at most `shardBytes` and `model.safetensors.index.json`, as transformers does),
 * config.json, the copied files and the card. Built in a temporary directory beside `dir` and renamed into place, so
 * a failure leaves no half-written checkpoint; `dir` must not exist yet or be empty.
 */
export async function writeHfCheckpoint(
  dir: string,
  model: OnnxModel,
  mapping: CheckpointMapping,
  output: HfOutput = {},
): Promise<{ files: string[]; bytes: number }> {
  const target = resolve(dir);
  const existing = await readdir(target).catch(() => undefined);
  if (existing !== undefined && existing.length > 0)
    throw new GramfuseError(ErrorCode.InvalidArgument, `--hf-out ${dir}: the directory is not empty; name a new directory`, {
      facts: { path: dir },
    });
  const staging = join(dirname(target), `.${basename(target)}.tmp-${randomBytes(4).toString('hex')}`);
  await mkdir(staging, { recursive: true }).catch((error: unknown) => {
    throw fileError(error, staging, 'creating the checkpoint directory');
  });
  try {
    const initializers = new Map(model.proto.graph!.initializer.map((t) => [t.name ?? '', t]));
    const bytesOf = (e: CheckpointEntry): Promise<Uint8Array> => {
      const tensor = initializers.get(e.parameter)!;
      const own = floatDtypeOf(tensor.dataType ?? 0, e.parameter);
      const target = floatDtypeOf(dtypeInfo(e.dtype).onnx, e.name);
      const stored = tensorBytes(model, tensor);
      const bytes = own === target ? stored : encodeFloats(decodeFloats(stored, own), target);
      return Promise.resolve(
        e.transpose ? transposeBytes(bytes, Number(tensor.dims[0]), Number(tensor.dims[1]), floatWidth(target)) : bytes,
      );
    };
    const shardBytes = output.shardBytes ?? HF_SHARD_BYTES;
    const widthOf = (e: CheckpointEntry): number => floatWidth(floatDtypeOf(dtypeInfo(e.dtype).onnx, e.name));
    const shards: CheckpointEntry[][] = [[]];
    let size = 0;
    for (const e of mapping.entries) {
      const bytes = e.shape.reduce((a, b) => a * b, 1) * widthOf(e);
      if (size > 0 && size + bytes > shardBytes) {
        shards.push([]);
        size = 0;
      }
      shards.at(-1)!.push(e);
      size += bytes;
    }
    const files: string[] = [];
    const weightMap: Record<string, string> = {};
    let total = 0;
    for (const [i, shard] of shards.entries()) {
      const file =
        shards.length === 1
          ? 'model.safetensors'
          : `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
      await writeSafetensorsFrom(
        join(staging, file),
        shard.map((e) => {
          const bytes = e.shape.reduce((a, b) => a * b, 1) * widthOf(e);
          total += bytes;
          weightMap[e.name] = file;
          return {
            name: e.name,
            dtype: SAFETENSORS_DTYPE[floatDtypeOf(dtypeInfo(e.dtype).onnx, e.name)],
            shape: e.shape,
            bytes,
            read: () => bytesOf(e),
          };
        }),
        { format: 'pt' },
      );
      files.push(file);
    }
    if (shards.length > 1) {
      await writeFile(
        join(staging, 'model.safetensors.index.json'),
        `${JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2)}\n`,
      );
      files.push('model.safetensors.index.json');
    }
    if (output.config !== undefined) {
      await writeFile(join(staging, 'config.json'), output.config);
      files.push('config.json');
    }
    for (const path of output.copy ?? []) {
      await copyFile(path, join(staging, basename(path))).catch((error: unknown) => {
        throw fileError(error, path, 'copying it into the checkpoint');
      });
      files.push(basename(path));
    }
    if (output.card !== undefined) {
      await writeFile(join(staging, 'README.md'), output.card);
      files.push('README.md');
    }
    if (existing !== undefined) await rm(target, { recursive: true, force: true });
    await rename(staging, target);
    return { files, bytes: total };
  } catch (error) {
    await rm(staging, { recursive: true, force: true });
    throw error;
  }
}

/** A float element type's dtype; anything else is UNSUPPORTED_DTYPE naming the tensor. */
function floatDtypeOf(onnx: number, name: string): FloatDtype {
  const dtype = dtypeFromOnnx(onnx, `tensor ${name}`).dtype;
  if (!isFloatDtype(dtype))
    throw new GramfuseError(ErrorCode.UnsupportedDtype, `tensor ${name}: ${dtype} is not a float type`, { facts: { tensor: name } });
  return dtype;
}
