/**
 * Raises the HTTP/2 receive window of a grpc-js server's connections. grpc-js 1.14 leaves it at
 * HTTP/2's 64 KiB (the client side has `grpc-node.flow_control_window`; the server side waits on
 * grpc/grpc-node#3058), so a client uploading a 1 MiB gradient waits for sixteen WINDOW_UPDATE
 * round trips, each through both event loops: 8-30 ms per upload on a busy 2-core host.
 *
 * grpc-js keeps its Node http2 servers in a private map; we listen to their sessions there. If a
 * later grpc-js no longer has that map, nothing is changed and false is returned (the option then
 * costs throughput, not correctness).
 */
import type { Server } from '@grpc/grpc-js';
import type { Http2Server, Http2Session } from 'node:http2';

/** Call after bindAsync has succeeded. Returns whether the window could be set. */
export function raiseServerReceiveWindow(server: Server, windowBytes: number): boolean {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) return false;
  for (const h2 of servers.keys() as IterableIterator<Http2Server>) {
    h2.on('session', (session: Http2Session) => {
      // Stream-level window for the streams the client opens, and the connection-level window.
      session.settings({ initialWindowSize: windowBytes });
      session.setLocalWindowSize(windowBytes);
    });
  }
  return servers.size > 0;
}
