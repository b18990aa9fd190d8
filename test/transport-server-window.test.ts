/**
 * raiseServerReceiveWindow reaches grpc-js's private http2 servers: a real connection's session has
 * the raised local window (the check fails loudly if a grpc-js upgrade moves that field).
 */
import test from 'ava';
import { Client, credentials, Server, ServerCredentials } from '@grpc/grpc-js';
import type { Http2Server, Http2Session } from 'node:http2';
import { addHealthAndReflection } from '../src/transport/health-reflection.js';
import { raiseServerReceiveWindow } from '../src/transport/server-window.js';

test('a client connection to the server gets the raised HTTP/2 receive window', async (t) => {
  const server = new Server();
  addHealthAndReflection(server, [], 'SERVING');
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  const window = 3 * 1024 * 1024;
  t.true(raiseServerReceiveWindow(server, window));
  const sessions: Http2Session[] = [];
  for (const h2 of (server as unknown as { http2Servers: Map<Http2Server, unknown> }).http2Servers.keys()) h2.on('session', (s) => sessions.push(s));
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
  const bytes = (b: Buffer) => b;
  try {
    // grpc.health.v1 Check with an empty request (the whole server), as raw bytes.
    await new Promise<void>((resolve, reject) =>
      client.makeUnaryRequest('/grpc.health.v1.Health/Check', bytes, bytes, Buffer.alloc(0), (e) => (e ? reject(e) : resolve())),
    );
    t.is(sessions.length, 1);
    // The window less what the call's own frames used (the default would be 65,535).
    const local = sessions[0]!.state.localWindowSize!;
    t.true(local > window - 64 * 1024 && local <= window, `local window ${local}`);
  } finally {
    client.close();
    server.forceShutdown();
  }
});
