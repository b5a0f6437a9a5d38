import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * A small TCP proxy for fault tests: forwards 127.0.0.1:<port> to a target; `cut()` drops every open
 * connection at once (a network failure), `blackhole` accepts connections but forwards nothing (a peer
 * that never answers).
 */
export class TcpProxy {
  private readonly sockets = new Set<Socket>();
  blackhole = false;
  cuts = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    const holder: { proxy?: TcpProxy } = {};
    const server = createServer((client) => {
      const proxy = holder.proxy!;
      proxy.sockets.add(client);
      client.on('close', () => proxy.sockets.delete(client));
      client.on('error', () => undefined);
      if (proxy.blackhole) return;
      const upstream = createConnection({ host: '127.0.0.1', port: targetPort });
      proxy.sockets.add(upstream);
      upstream.on('close', () => proxy.sockets.delete(upstream));
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
      client.pipe(upstream);
      upstream.pipe(client);
    });
    const port = await new Promise<number>((resolve) =>
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        resolve(typeof address === 'object' && address !== null ? address.port : 0);
      }),
    );
    holder.proxy = new TcpProxy(server, port);
    return holder.proxy;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  cut(): void {
    this.cuts++;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
