/**
 * A TCP proxy for tests that cut connections in the middle of a transfer: it forwards to a target
 * (known when the first connection comes, so an actor can be told the proxy's address before it
 * listens) and, once armed, drops every connection it carries when a large write goes upstream.
 */
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';

export interface CuttingProxy {
  address: string;
  /** Cut at the next upstream write larger than 16 KiB (tensor chunks; heartbeats are small). */
  arm(): void;
  cuts(): number;
  close(): void;
}

export async function cuttingProxy(target: () => string): Promise<CuttingProxy> {
  const sockets = new Set<Socket>();
  let armed = false;
  let cuts = 0;
  const server = createServer((client) => {
    const to = target();
    const upstream = createConnection({ host: to.slice(0, to.lastIndexOf(':')), port: Number(to.slice(to.lastIndexOf(':') + 1)) });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    client.on('data', (buf: Buffer) => {
      if (armed && buf.length > 16384) {
        armed = false;
        cuts++;
        for (const s of sockets) s.destroy();
        return;
      }
      upstream.write(buf);
    });
    upstream.on('data', (buf: Buffer) => client.write(buf));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    arm: () => (armed = true),
    cuts: () => cuts,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
