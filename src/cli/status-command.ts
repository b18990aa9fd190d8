/**
 * `spngd status HOST:PORT [--json] [--watch]`: a gRPC client of any actor's StateService. Prints a
 * readable summary (or the raw state as JSON); --watch follows the actor's metric stream. With
 * --tls-ca/--tls-cert/--tls-key and/or --token-file it authenticates like an actor.
 */
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import type { Command } from 'commander';
import { lifecycleStateToJSON, roleToJSON } from '../gen/spngd/v1/membership.js';
import { ActorState, StateServiceClient, type MetricEvent, type WatchMetricsResponse } from '../gen/spngd/v1/state.js';
import { statisticKindToJSON } from '../gen/spngd/v1/factor_owner.js';
import { INSECURE, loadCredentials, type ActorCredentials } from '../actors/common/credentials.js';
import { addSecurityOptions, securityFromFlags, type SecurityFlags } from './security-options.js';

export class UnreachableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnreachableError';
  }
}

/** HOST:PORT with an explicit port (gRPC would otherwise quietly try 443). */
export function checkAddress(address: string): void {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d+)$/.exec(address);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port >= 1 && port <= 65535)) {
    throw new UnreachableError(
      `${address}: give the actor's address as HOST:PORT, e.g. 127.0.0.1:7000 (spngd train prints the parameter server's: "watch it with: npx spngd status ...")`,
    );
  }
}

function describeError(address: string, err: ServiceError): string {
  // One line: a TLS failure's details carry OpenSSL's multi-line error; grpc-js appends an empty
  // "Resolution note:" to a refused connection.
  let why = (err.details || err.message)
    .replace(/\s*\n\s*/g, ' ')
    .replace(/\s*Resolution note:\s*$/, '')
    .trim();
  if (/ECONNREFUSED/.test(why)) why = `connection refused (ECONNREFUSED): nothing listens there; is the actor running, and is this its address?`;
  const hint =
    err.code === status.UNAUTHENTICATED
      ? " (give the cluster's token with --token-file)"
      : /certificate|ssl|tls/i.test(why)
        ? ' (check --tls-ca/--tls-cert/--tls-key)'
        : '';
  return `${address}: ${why}${hint}`;
}

export function fetchState(address: string, timeoutMs = 5000, security: ActorCredentials = INSECURE): Promise<ActorState> {
  const client = new StateServiceClient(address, security.channelCredentials(), security.clientOptions());
  return new Promise<ActorState>((resolve, reject) => {
    client.getState({}, new Metadata(), { deadline: Date.now() + timeoutMs }, (err: ServiceError | null, res) => {
      client.close();
      if (err) reject(new UnreachableError(describeError(address, err)));
      else resolve(res!.state!);
    });
  });
}

const short = (s: string, prefix: string) => s.replace(prefix, '').toLowerCase();
/** A statistic's name as metrics.jsonl and the report spell it: A, G, F (batch-norm Fisher). */
const statName = (kind: Parameters<typeof statisticKindToJSON>[0]): string => {
  const k = statisticKindToJSON(kind).replace('STATISTIC_KIND_', '');
  return k === 'BN_FISHER' ? 'F' : k;
};

export function formatState(s: ActorState): string {
  const lines = [
    `${short(roleToJSON(s.role), 'ROLE_')} ${s.id} at ${s.address}: ${short(lifecycleStateToJSON(s.lifecycle), 'LIFECYCLE_STATE_')}, step ${s.step}, membership epoch ${s.epoch}`,
  ];
  for (const w of s.warnings) lines.push(`warning: ${w}`);
  const refused = Object.entries(s.refusals ?? {});
  if (refused.length > 0)
    lines.push(
      `refused: ${refused.map(([k, n]) => `${k} ${n}`).join(', ')}${s.recentRefusals?.length ? `; newest: ${s.recentRefusals[s.recentRefusals.length - 1]}` : ''}`,
    );
  if (s.lastLoss !== undefined) lines.push(`last step: loss ${s.lastLoss.toFixed(4)}, accuracy ${(s.lastAccuracy ?? 0).toFixed(4)}`);
  if (s.members.length > 0) lines.push(`members: ${s.members.map((m) => `${m.id}@${m.address}`).join(', ')}`);
  if (s.psShards.length > 0) {
    lines.push(
      `PS shards: ${s.psShards.map((p) => `${p.memberId} ${p.layers.join(' ') || '(no layers)'} (${(Number(p.bytes) / 1e6).toFixed(2)} MB)`).join('; ')}`,
    );
  }
  if (s.assignment && s.assignment.layers.length > 0) {
    lines.push(`assignment (epoch ${s.assignment.epoch}): ${s.assignment.layers.map((l) => `${l.layer}->${l.ownerId || '(none)'}`).join(', ')}`);
  }
  if (s.preconditioners.length > 0) {
    lines.push(`preconditioners: ${s.preconditioners.map((p) => `${p.layer} v${p.version} (step ${p.computedFromStep}, ${p.ownerId})`).join(', ')}`);
  }
  if (s.statisticSchedules.length > 0) {
    lines.push(`stale-statistics intervals: ${s.statisticSchedules.map((x) => `${x.layer}/${statName(x.kind)}=${x.interval}`).join(', ')}`);
  }
  const phases = Object.entries(s.phaseTimings);
  if (phases.length > 0) lines.push(`phases (mean ms): ${phases.map(([k, v]) => `${k} ${v.meanMs.toFixed(1)}`).join(', ')}`);
  const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
  if ((s.traffic ?? []).length > 0)
    lines.push(`traffic (MB sent/received): ${s.traffic.map((x) => `${x.method} ${mb(x.sentBytes)}/${mb(x.receivedBytes)}`).join(', ')}`);
  return lines.join('\n');
}

function formatEvent(e: MetricEvent): string {
  const labels = Object.entries(e.labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  return `step ${e.step} ${e.name} ${Number.isInteger(e.value) ? e.value : e.value.toFixed(4)}${labels ? ` ${labels}` : ''} (${e.sourceId})`;
}

export function addStatusCommand(program: Command): void {
  addSecurityOptions(
    program
      .command('status')
      .description('show the state of any actor (PS, worker, owner)')
      .argument('<host:port>', "the actor's address")
      .option('--json', 'print the state as JSON')
      .option('--watch', 'then follow its metric events'),
  ).action(async (address: string, o: SecurityFlags & { json?: boolean; watch?: boolean }) => {
    checkAddress(address);
    const security = loadCredentials(securityFromFlags(o));
    const state = await fetchState(address, 5000, security);
    process.stdout.write(`${o.json ? JSON.stringify(ActorState.toJSON(state), null, 2) : formatState(state)}\n`);
    if (!o.watch) return;
    const client = new StateServiceClient(address, security.channelCredentials(), security.clientOptions());
    const call = client.watchMetrics({ names: [], includeHistory: false });
    await new Promise<void>((resolve, reject) => {
      call.on('data', (r: WatchMetricsResponse) => {
        for (const e of r.events) process.stdout.write(`${o.json ? JSON.stringify(e) : formatEvent(e)}\n`);
      });
      call.on('error', (err: ServiceError) => reject(new UnreachableError(describeError(address, err))));
      call.on('end', () => resolve());
      process.once('SIGINT', () => {
        call.cancel();
        resolve();
      });
    });
    client.close();
  });
}
