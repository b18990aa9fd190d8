/**
 * Several hosts on one machine, for tests: every host is a network namespace with its own address
 * on a private bridge, and every actor is the real `spngd` CLI run in its host's namespace
 * (`ip netns exec NS node --import tsx src/cli/entry.ts ...`), so actors reach each other by host
 * name over a real network path that a test can cut (`linkDown`) and restore (`linkUp`).
 *
 * Layout, for a net with prefix P:
 *   namespace P-br:    bridge br0, and one veth end per host (v-<host>), no address
 *   namespace P-<host>: eth0 (the other veth end) with 10.231.0.<n>/24, and lo
 *   /etc/netns/P-<host>/hosts: every host's name and address (`ip netns exec` mounts it on /etc/hosts)
 * The bridge lives in a namespace of its own, so the subnet is private to one net: nothing is
 * routed to the machine's other namespaces, and two nets (two test processes) do not collide.
 *
 * Needs root and iproute2 (`netnsUnavailable()` says why not, for tests to skip). `destroy()`
 * kills whatever runs in the namespaces and removes namespaces, veths and /etc/netns entries; a
 * process exit handler does the same if a test never got to it, and `HostNet.create` removes nets
 * whose creating process has died (marker files in /run/spngd-netns).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { alive } from '../../src/util/atomic-file.js';
import { startActor, type Actor } from './processes.js';

const entry = fileURLToPath(new URL('../../src/cli/entry.ts', import.meta.url));

/** The /24 every net uses inside its own bridge namespace. */
export const SUBNET = '10.231.0';
const FIRST_HOST = 11;
const MARKER_DIR = '/run/spngd-netns';
const IP_TIMEOUT_MS = 10_000;

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: IP_TIMEOUT_MS });
}

function tryIp(args: string[]): void {
  try {
    ip(args);
  } catch {
    /* already gone */
  }
}

/** Identifies this process's PID namespace, so that a sweep never judges another container's pids. */
function pidNamespace(): string {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return 'unknown';
  }
}

/** Kills every process inside namespace `ns` (they were started there by a net of ours). */
function killInside(ns: string): void {
  let pids: number[] = [];
  try {
    pids = ip(['netns', 'pids', ns]).split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return;
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

interface Marker {
  pid: number;
  pidNamespace: string;
  namespaces: string[];
}

/** Synchronous, so that it also runs from a process exit handler. */
function removeNamespaces(namespaces: string[]): void {
  for (const ns of namespaces) killInside(ns);
  for (const ns of namespaces) {
    tryIp(['netns', 'del', ns]);
    rmSync(join('/etc/netns', ns), { recursive: true, force: true });
  }
}

/** Removes nets left behind by test processes of this PID namespace that have died. */
function sweepStale(): void {
  if (!existsSync(MARKER_DIR)) return;
  const mine = pidNamespace();
  for (const f of readdirSync(MARKER_DIR)) {
    const file = join(MARKER_DIR, f);
    try {
      const m = JSON.parse(readFileSync(file, 'utf8')) as Marker;
      if (m.pidNamespace !== mine || alive(m.pid)) continue;
      removeNamespaces(m.namespaces);
      rmSync(file, { force: true });
    } catch {
      /* unreadable marker: leave it */
    }
  }
}

let probed: { reason: string | undefined } | undefined;

/**
 * Why network namespaces cannot be used here (undefined: they can). Probes once: root, iproute2, and
 * creating a namespace with a bridge and a veth pair.
 */
export function netnsUnavailable(): string | undefined {
  if (probed) return probed.reason;
  const why = (): string | undefined => {
    if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
    if (process.getuid?.() !== 0) return 'network namespaces need root (ip netns add)';
    try {
      ip(['-V']);
    } catch {
      return 'iproute2 is not installed (apt-get install iproute2)';
    }
    const ns = `spngd-probe-${process.pid}`;
    try {
      ip(['netns', 'add', ns]);
      ip(['-n', ns, 'link', 'add', 'br0', 'type', 'bridge']);
      ip(['-n', ns, 'link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb']);
      return undefined;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      return `cannot create a network namespace with a bridge and a veth pair: ${(e.stderr || e.message).trim()}`;
    } finally {
      tryIp(['netns', 'del', ns]);
    }
  };
  probed = { reason: why() };
  return probed.reason;
}

const live = new Set<HostNet>();
let exitHook = false;

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A private network of named hosts (see the file comment). */
export class HostNet {
  private readonly actors: Actor[] = [];
  private destroyed = false;

  private constructor(
    readonly prefix: string,
    /** host name → address */
    readonly hosts: ReadonlyMap<string, string>,
  ) {}

  /**
   * Creates the bridge and one namespace per host (names: letters, digits and '-', at most 13
   * characters, since the bridge-side veth is "v-<host>"), with more names for a host in
   * `aliases` (e.g. { ps: ['spngd-ps-0.spngd-ps'] }). On failure everything made so far is removed
   * and the error is thrown.
   */
  static create(hostNames: string[], opts: { aliases?: Record<string, string[]> } = {}): HostNet {
    const reason = netnsUnavailable();
    if (reason) throw new Error(reason);
    if (hostNames.length > 200) throw new Error('at most 200 hosts');
    for (const h of hostNames) if (!/^[a-z][a-z0-9-]{0,12}$/.test(h)) throw new Error(`bad host name "${h}"`);
    sweepStale();
    const prefix = `spngd-${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
    const net = new HostNet(prefix, new Map(hostNames.map((h, i) => [h, `${SUBNET}.${FIRST_HOST + i}`])));
    mkdirSync(MARKER_DIR, { recursive: true });
    const marker: Marker = { pid: process.pid, pidNamespace: pidNamespace(), namespaces: net.namespaces() };
    writeFileSync(join(MARKER_DIR, `${prefix}.json`), JSON.stringify(marker));
    live.add(net);
    if (!exitHook) {
      exitHook = true;
      process.on('exit', () => {
        for (const n of live) n.destroySync();
      });
    }
    try {
      const br = net.bridgeNs;
      ip(['netns', 'add', br]);
      ip(['-n', br, 'link', 'add', 'br0', 'type', 'bridge']);
      ip(['-n', br, 'link', 'set', 'br0', 'up']);
      const names = (h: string) => [h, ...(opts.aliases?.[h] ?? [])].join(' ');
      const hostsFile = ['127.0.0.1 localhost', ...[...net.hosts].map(([h, a]) => `${a} ${names(h)}`), ''].join('\n');
      for (const [host, address] of net.hosts) {
        const ns = net.ns(host);
        ip(['netns', 'add', ns]);
        mkdirSync(join('/etc/netns', ns), { recursive: true });
        writeFileSync(join('/etc/netns', ns, 'hosts'), hostsFile);
        // Created inside the bridge namespace with its peer moved straight into the host's: no
        // interface ever appears in the machine's own namespace.
        ip(['-n', br, 'link', 'add', net.veth(host), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
        ip(['-n', br, 'link', 'set', net.veth(host), 'master', 'br0', 'up']);
        ip(['-n', ns, 'link', 'set', 'lo', 'up']);
        ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
        ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      }
    } catch (err) {
      net.destroySync();
      throw err;
    }
    return net;
  }

  get bridgeNs(): string {
    return `${this.prefix}-br`;
  }

  /** The namespace of `host`. */
  ns(host: string): string {
    if (!this.hosts.has(host)) throw new Error(`no host "${host}" in this net`);
    return `${this.prefix}-${host}`;
  }

  /** The bridge-side end of `host`'s veth pair (in the bridge namespace). */
  veth(host: string): string {
    return `v-${host}`;
  }

  address(host: string): string {
    const a = this.hosts.get(host);
    if (!a) throw new Error(`no host "${host}" in this net`);
    return a;
  }

  namespaces(): string[] {
    return [this.bridgeNs, ...[...this.hosts.keys()].map((h) => `${this.prefix}-${h}`)];
  }

  /**
   * Starts `spngd ARGS...` on `host` (logs to LOGDIR/NAME.log, like startActor). Its `listening`
   * promise rejects if the process exits first or does not listen within `listenTimeoutMs`.
   */
  start(host: string, name: string, args: string[], logDir: string, listenTimeoutMs = 60_000): Actor {
    return this.spawn(host, name, { args }, logDir, listenTimeoutMs);
  }

  /**
   * Like start, for any command line (`argv`) or spngd arguments (`args`), with more environment
   * variables (`env`).
   */
  spawn(host: string, name: string, cmd: { args?: string[]; argv?: string[]; env?: Record<string, string> }, logDir: string, listenTimeoutMs = 60_000): Actor {
    if (this.destroyed) throw new Error('this net is destroyed');
    const a = startActor(name, cmd.args ?? [], logDir, {
      prefix: ['ip', 'netns', 'exec', this.ns(host)],
      ...(cmd.argv ? { argv: cmd.argv } : {}),
      ...(cmd.env ? { env: cmd.env } : {}),
    });
    this.actors.push(a);
    let timer: NodeJS.Timeout | undefined;
    const listening = Promise.race([
      a.listening,
      a.exited.then((code) => Promise.reject(new Error(`${name} on ${host} exited (${code}) before listening; see ${join(logDir, `${name}.log`)}`))),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${name} on ${host} did not listen within ${listenTimeoutMs} ms`)), listenTimeoutMs);
        timer.unref();
      }),
    ]).finally(() => clearTimeout(timer));
    listening.catch(() => undefined);
    return { ...a, listening };
  }

  /** Runs a one-shot `spngd ARGS...` on `host` (e.g. status), killed after `timeoutMs`. */
  run(host: string, args: string[], timeoutMs = 30_000): Promise<CommandResult> {
    return this.runCommand(host, [process.execPath, '--import', 'tsx', entry, ...args], {}, timeoutMs);
  }

  /** Runs a one-shot command on `host` with more environment variables, killed after `timeoutMs`. */
  runCommand(host: string, argv: string[], env: Record<string, string> = {}, timeoutMs = 30_000): Promise<CommandResult> {
    return new Promise((resolve, reject) => {
      const proc = spawn('ip', ['netns', 'exec', this.ns(host), ...argv], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, ...env },
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
      });
      let stdout = '';
      let stderr = '';
      proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      proc.on('error', reject);
      proc.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  }

  /** `spngd status TARGET --json`, run on `host`: the actor's state in the proto3 JSON mapping. */
  async status(host: string, target: string): Promise<StatusJson> {
    const r = await this.run(host, ['status', target, '--json']);
    if (r.code !== 0) throw new Error(`spngd status ${target} on ${host} failed (${r.code}): ${r.stderr.trim()}`);
    return JSON.parse(r.stdout) as StatusJson;
  }

  /** Cuts `host` off the bridge (its veth's bridge end goes down): a partition of that host. */
  linkDown(host: string): void {
    ip(['-n', this.bridgeNs, 'link', 'set', this.veth(host), 'down']);
  }

  linkUp(host: string): void {
    ip(['-n', this.bridgeNs, 'link', 'set', this.veth(host), 'up']);
  }

  /** Kills the actors (SIGKILL) and removes namespaces, veths and /etc/netns entries. Idempotent. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    for (const a of this.actors) if (a.proc.exitCode === null && a.proc.signalCode === null) a.proc.kill('SIGKILL');
    await Promise.race([Promise.all(this.actors.map((a) => a.exited)), new Promise((r) => setTimeout(r, 5000).unref())]);
    this.destroySync();
  }

  private destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const a of this.actors) if (a.proc.exitCode === null && a.proc.signalCode === null) a.proc.kill('SIGKILL');
    removeNamespaces(this.namespaces());
    rmSync(join(MARKER_DIR, `${this.prefix}.json`), { force: true });
    live.delete(this);
  }
}

/** What the tests read of `spngd status --json` (proto3 JSON mapping of ActorState). */
export interface StatusJson {
  id: string;
  address: string;
  step?: number;
  members?: { id: string; role: string; address: string }[];
  assignment?: { epoch?: number; layers?: { layer: string; ownerId?: string }[] };
  preconditioners?: { layer: string; version?: number; ownerId?: string }[];
}

/** Owners in an assignment, sorted. */
export function ownersOf(s: StatusJson): string[] {
  return [...new Set((s.assignment?.layers ?? []).map((l) => l.ownerId ?? ''))].sort();
}
