/**
 * Hosts with rate-limited links for `npm run bench -- scale`: one network namespace per actor host
 * on a private bridge (its own namespace), like test/helpers/netns.ts but with names and a subnet
 * of its own (prefix "sc-<pid>", 10.232.0.0/24) and a tbf qdisc on both ends of every host's veth
 * pair: the host's eth0 (what it sends) and the bridge end (what it receives). tc netem is not
 * assumed (often missing), so links have a rate and no added latency.
 *
 * Needs root, iproute2 and tc's tbf. `destroy()` (also run at process exit) kills what runs in the
 * namespaces and removes them with their veths and /etc/netns entries.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const SUBNET = '10.232.0';
const FIRST_HOST = 11;
const TIMEOUT_MS = 10_000;

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: TIMEOUT_MS });
}

function attempt(cmd: string, args: string[]): void {
  try {
    run(cmd, args);
  } catch {
    /* already gone */
  }
}

/** Why this bench cannot build its hosts here (undefined: it can): root, iproute2, a veth pair, tbf. */
export function scaleNetUnavailable(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'network namespaces need root (ip netns add, tc): run the bench as root';
  for (const [cmd, arg] of [
    ['ip', '-V'],
    ['tc', '-V'],
  ]) {
    try {
      run(cmd, [arg]);
    } catch {
      return `${cmd} is not installed (apt-get install iproute2)`;
    }
  }
  const ns = `sc-probe-${process.pid}`;
  try {
    run('ip', ['netns', 'add', ns]);
    run('ip', ['-n', ns, 'link', 'add', 'sca', 'type', 'veth', 'peer', 'name', 'scb']);
    run('ip', ['-n', ns, 'link', 'set', 'sca', 'up']);
    run('tc', ['-n', ns, 'qdisc', 'add', 'dev', 'sca', 'root', 'tbf', 'rate', '100mbit', 'burst', '128kb', 'latency', '50ms']);
    return undefined;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    return `cannot create a namespace with a veth pair rate-limited by tc tbf: ${(e.stderr || e.message).trim()}`;
  } finally {
    attempt('ip', ['netns', 'del', ns]);
  }
}

export interface Proc {
  name: string;
  proc: ChildProcess;
  exited: Promise<number | null>;
  /** Resolves at the actor's {"event":"listening"} line. */
  listening: Promise<void>;
}

const live = new Set<ScaleNet>();
let exitHook = false;

export class ScaleNet {
  private readonly procs: Proc[] = [];
  private destroyed = false;

  private constructor(
    readonly prefix: string,
    readonly hosts: ReadonlyMap<string, string>,
  ) {}

  /**
   * Hosts named `names` (letters, digits, '-', at most 12 characters), every link limited to
   * `rateBps` bits per second each way (undefined: no limit).
   */
  static create(names: string[], rateBps: number | undefined): ScaleNet {
    const why = scaleNetUnavailable();
    if (why) throw new Error(why);
    for (const h of names) if (!/^[a-z][a-z0-9-]{0,11}$/.test(h)) throw new Error(`bad host name "${h}"`);
    const prefix = `sc-${process.pid}-${Math.random().toString(36).slice(2, 5)}`;
    const net = new ScaleNet(prefix, new Map(names.map((h, i) => [h, `${SUBNET}.${FIRST_HOST + i}`])));
    live.add(net);
    if (!exitHook) {
      exitHook = true;
      process.on('exit', () => {
        for (const n of live) n.destroySync();
      });
    }
    try {
      const br = net.bridgeNs;
      run('ip', ['netns', 'add', br]);
      run('ip', ['-n', br, 'link', 'add', 'br0', 'type', 'bridge']);
      run('ip', ['-n', br, 'link', 'set', 'br0', 'up']);
      const hostsFile = ['127.0.0.1 localhost', ...[...net.hosts].map(([h, a]) => `${a} ${h}`), ''].join('\n');
      for (const [host, address] of net.hosts) {
        const ns = net.ns(host);
        run('ip', ['netns', 'add', ns]);
        mkdirSync(join('/etc/netns', ns), { recursive: true });
        writeFileSync(join('/etc/netns', ns, 'hosts'), hostsFile);
        run('ip', ['-n', br, 'link', 'add', `s-${host}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
        run('ip', ['-n', br, 'link', 'set', `s-${host}`, 'master', 'br0', 'up']);
        run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
        run('ip', ['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
        run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
        if (rateBps !== undefined) {
          net.limit(ns, 'eth0', rateBps);
          net.limit(br, `s-${host}`, rateBps);
        }
      }
    } catch (err) {
      net.destroySync();
      throw err;
    }
    return net;
  }

  /**
   * tbf on the egress of `dev`: `rate`, a bucket of 5 ms of traffic (at least 128 KiB, so that a
   * 64 KiB segmentation-offload packet fits) and a queue of 50 ms.
   */
  private limit(ns: string, dev: string, rateBps: number): void {
    const burst = Math.max(128 * 1024, Math.round((rateBps / 8) * 0.005));
    run('tc', ['-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${Math.round(rateBps / 1000)}kbit`, 'burst', String(burst), 'latency', '50ms']);
  }

  get bridgeNs(): string {
    return `${this.prefix}-br`;
  }

  ns(host: string): string {
    if (!this.hosts.has(host)) throw new Error(`no host "${host}"`);
    return `${this.prefix}-${host}`;
  }

  namespaces(): string[] {
    return [this.bridgeNs, ...[...this.hosts.keys()].map((h) => this.ns(h))];
  }

  /** Runs `argv` in `host`'s namespace, stderr to LOGDIR/NAME.log. */
  start(host: string, name: string, argv: string[], logDir: string, env: Record<string, string> = {}): Proc {
    if (this.destroyed) throw new Error('this net is destroyed');
    const proc = spawn('ip', ['netns', 'exec', this.ns(host), ...argv], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    proc.stderr!.pipe(createWriteStream(join(logDir, `${name}.log`), { flags: 'a' }));
    let ready: () => void = () => undefined;
    const listening = new Promise<void>((r) => (ready = r));
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      if (line.includes('"event":"listening"')) ready();
    });
    const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
    const p = { name, proc, exited, listening };
    this.procs.push(p);
    return p;
  }

  /** Runs `argv` in `host`'s namespace to its end; its stdout. */
  exec(host: string, argv: string[], timeoutMs = 30_000): string {
    return execFileSync('ip', ['netns', 'exec', this.ns(host), ...argv], { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    for (const p of this.procs) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL');
    await Promise.race([Promise.all(this.procs.map((p) => p.exited)), new Promise((r) => setTimeout(r, 5000).unref())]);
    this.destroySync();
  }

  private destroySync(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const p of this.procs) if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL');
    for (const ns of this.namespaces()) {
      let pids: number[] = [];
      try {
        pids = run('ip', ['netns', 'pids', ns]).split(/\s+/).filter(Boolean).map(Number);
      } catch {
        /* gone */
      }
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    for (const ns of this.namespaces()) {
      attempt('ip', ['netns', 'del', ns]);
      rmSync(join('/etc/netns', ns), { recursive: true, force: true });
    }
    live.delete(this);
  }
}
