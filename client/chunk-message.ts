// An upload chunk encoded for the wire once, its bytes read straight into the message: the generated serializer
// would copy a 4 MiB chunk three times (protobuf's growing writer, its final slice, Buffer.from) into ≈ 24 MiB of
// new buffers, which on a BERT-base-size bundle cost the agent more CPU (garbage collection above all) than the
// SHA-256 of the same bytes. grpc-js still frames the message (one copy); nothing else copies it.
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';

import { federation } from '../proto/index.js';

const PLACEHOLDER_SHA256 = '0'.repeat(64);

/** A Chunk message under construction: fill `data`, then `seal` it with the data's SHA-256 and send what it returns. */
export interface ChunkMessage {
  /** Where the chunk's bytes go: the message's tail. */
  readonly data: Buffer;
  /** Writes the header with the chunk's digest (64 hex digits, as every SHA-256 is); returns the whole message. */
  seal(sha256: string): Buffer;
}

/**
 * Allocates the encoded Chunk for `fields` and `dataLength` bytes of data (uninitialized until filled). The
 * header holds every field but `data` and is encoded by the generated code; `data` follows as field 9 (protobuf
 * accepts fields in any order, and the coordinator decodes the message with the same generated code). With a
 * `pool`, the message lies in one of its buffers instead of a fresh allocation.
 */
export function chunkMessage(fields: Omit<federation.Chunk, 'data' | 'sha256'>, dataLength: number, pool?: ChunkMessagePool): ChunkMessage {
  const header = (sha256: string): Uint8Array => federation.Chunk.encode({ ...fields, data: new Uint8Array(0), sha256 }).finish();
  const headerLength = header(PLACEHOLDER_SHA256).byteLength;
  // Proto3 writes no empty bytes field: an empty statistic's one chunk is the header alone, as the generated code writes it.
  // Otherwise field 9 (`bytes data`) follows: its tag and length, then the bytes.
  const prefix = dataLength === 0 ? new Uint8Array(0) : new BinaryWriter().tag(9, WireType.LengthDelimited).uint32(dataLength).finish();
  const dataStart = headerLength + prefix.byteLength;
  const message = pool === undefined ? Buffer.allocUnsafe(dataStart + dataLength) : pool.take(dataStart + dataLength);
  message.set(prefix, headerLength);
  return {
    data: message.subarray(dataStart),
    seal(sha256: string): Buffer {
      if (!/^[0-9a-f]{64}$/.test(sha256)) throw new RangeError(`chunkMessage: ${sha256} is not a SHA-256 in hex`);
      message.set(header(sha256), 0);
      return message;
    },
  };
}

/**
 * Message buffers reused in turn, for an upload with a window: FederationClient.upload reads the next message only
 * while fewer than `window` are unacknowledged, and an acknowledgement of any message means the coordinator has
 * received every message before it whole (one HTTP/2 stream, in order), so grpc-js is done with them. A pool of
 * window + 1 buffers therefore never hands out a buffer whose message may still be read. Allocating a fresh 4 MiB
 * buffer per chunk instead costs garbage collections and page faults measured at ≈ 10 % of a BERT-base-size upload.
 */
export class ChunkMessagePool {
  private readonly buffers: Buffer[] = [];
  private taken = 0;

  /** `window`: the upload's window, as passed to FederationClient.upload. */
  constructor(readonly window: number) {
    if (!Number.isInteger(window) || window < 1) throw new RangeError(`ChunkMessagePool: window ${window} is not a whole number ≥ 1`);
  }

  /** `bytes` of the least recently taken buffer (grown when smaller). */
  take(bytes: number): Buffer {
    const slot = this.taken++ % (this.window + 1);
    const buffer = this.buffers[slot];
    if (buffer !== undefined && buffer.byteLength >= bytes) return buffer.subarray(0, bytes);
    const grown = Buffer.allocUnsafeSlow(bytes);
    this.buffers[slot] = grown;
    return grown;
  }
}
