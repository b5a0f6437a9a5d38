// The raw baseline of bench/upload, in a process of its own as the coordinator is: a grpc-js client-streaming
// service that counts the bytes it receives and replies with the count (no hashing, no disk). With --store FILE it
// also writes every message to FILE in order and fsyncs it before replying: the least a receiver that keeps the
// bytes durably must do (the bench's second baseline); with --hash it also feeds every message to one SHA-256,
// as the coordinator feeds a statistic's running digest (the third, with a client that hashes each message as
// the agent hashes each chunk). Prints {"port": N} on its first line.
// Arguments: [--tls CA.pem CERT.pem KEY.pem] [--store FILE] [--hash].
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';

import * as grpc from '@grpc/grpc-js';

export const sinkService: grpc.ServiceDefinition = {
  sink: {
    path: '/bench.Sink/Sink',
    requestStream: true,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};

async function main(): Promise<void> {
  const tlsAt = process.argv.indexOf('--tls');
  const storeAt = process.argv.indexOf('--store');
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 * 1024 });
  server.addService(sinkService, {
    sink: (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      let received = 0;
      const file = storeAt < 0 ? undefined : open(process.argv[storeAt + 1]!, 'w');
      const digest = process.argv.includes('--hash') ? createHash('sha256') : undefined;
      let written: Promise<unknown> = Promise.resolve();
      call.on('data', (b: Buffer) => {
        const at = received;
        received += b.byteLength;
        digest?.update(b);
        if (file !== undefined) written = written.then(async () => (await file).write(b, 0, b.byteLength, at));
      });
      call.on('end', () => {
        void written
          .then(async () => {
            if (file === undefined) return;
            const handle = await file;
            await handle.sync();
            await handle.close();
          })
          .then(
            () => callback(null, Buffer.from(digest === undefined ? String(received) : `${received} ${digest.digest('hex')}`)),
            (error: unknown) => callback({ code: grpc.status.INTERNAL, details: String(error) }),
          );
      });
    },
  });
  const credentials =
    tlsAt < 0
      ? grpc.ServerCredentials.createInsecure()
      : grpc.ServerCredentials.createSsl(
          readFileSync(process.argv[tlsAt + 1]!),
          [{ cert_chain: readFileSync(process.argv[tlsAt + 2]!), private_key: readFileSync(process.argv[tlsAt + 3]!) }],
          true,
        );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', credentials, (error, p) => (error === null ? resolve(p) : reject(error))),
  );
  process.stdout.write(`${JSON.stringify({ port })}\n`);
}

if (process.argv[1] !== undefined && import.meta.filename === process.argv[1]) void main();
