#!/usr/bin/env node
// A grpc.health.v1 Check of the actor in this container, for Kubernetes exec probes.
//
//   node /opt/spngd/deploy/health-probe.mjs [--any-status] [--tls-ca F --tls-cert F --tls-key F] PORT
//
// Dials $POD_IP:PORT (127.0.0.1 without POD_IP), asks for the server's overall status ("") and
// exits 0 on SERVING, 1 otherwise. --any-status exits 0 on any answer (the process is alive, maybe
// starting or draining: a liveness probe). With the TLS files it presents this pod's certificate,
// which the actors require under mutual TLS; the kubelet's native gRPC probe cannot, which is why
// the manifests use this script. Health checks need no bearer token.
import { credentials, makeGenericClientConstructor } from '@grpc/grpc-js';
import health from 'grpc-health-check';
import { readFileSync } from 'node:fs';

// grpc-js sets the TLS server name to the pod IP it dials (DEP0123): harmless, and noise in probe output.
process.noDeprecation = true;

const args = process.argv.slice(2);
const flag = (name) => {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const [, value] = args.splice(i, 2);
  if (value === undefined) fail(`${name} needs a value`);
  return value;
};
function fail(message) {
  process.stderr.write(`health-probe: ${message}\n`);
  process.exit(1);
}

const anyStatus = args.includes('--any-status');
if (anyStatus) args.splice(args.indexOf('--any-status'), 1);
const tls = { ca: flag('--tls-ca'), cert: flag('--tls-cert'), key: flag('--tls-key') };
const timeoutMs = Number(flag('--timeout-ms') ?? 4000);
if (args.length !== 1 || !/^\d+$/.test(args[0])) fail('usage: health-probe.mjs [--any-status] [--tls-ca F --tls-cert F --tls-key F] [--timeout-ms N] PORT');
const given = Object.values(tls).filter((v) => v !== undefined).length;
if (given !== 0 && given !== 3) fail('--tls-ca, --tls-cert and --tls-key go together');

const host = process.env.POD_IP || '127.0.0.1';
const address = `${host.includes(':') ? `[${host}]` : host}:${args[0]}`;
let channel;
try {
  channel = given === 3 ? credentials.createSsl(readFileSync(tls.ca), readFileSync(tls.key), readFileSync(tls.cert)) : credentials.createInsecure();
} catch (err) {
  fail(`cannot read the TLS files: ${err.message}`);
}

const Health = makeGenericClientConstructor(health.service, 'Health');
const client = new Health(address, channel);
client.Check({ service: '' }, { deadline: Date.now() + timeoutMs }, (err, res) => {
  client.close();
  if (err) fail(`${address}: ${err.details || err.message}`);
  const status = res.status;
  if (anyStatus || status === 'SERVING') {
    process.stdout.write(`${address}: ${status}\n`);
    process.exit(0);
  }
  fail(`${address}: ${status}`);
});
