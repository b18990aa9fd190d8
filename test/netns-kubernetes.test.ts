/**
 * The Kubernetes manifests' own commands, run without Kubernetes: every pod of deploy/kubernetes
 * (the PS StatefulSet's pod, two worker pods, one owner pod, the PS shard StatefulSet's pod) is a network namespace
 * (test/helpers/netns.ts) where this test does what the kubelet would: the volumes are
 * directories (Secrets spngd-ca and spngd-token made as docs/deployment.md says, the job
 * ConfigMap, an emptyDir, the claim), the env comes from the manifest (pod IP, pod name), the
 * init container's script and then the container's command and args run as written, with only
 * /etc/spngd, /var/lib/spngd and /opt/spngd moved to this test's directories. Then: the exec
 * probes pass over mutual TLS (and a plaintext check, what the kubelet's native gRPC probe would
 * do, does not); `spngd status` as the docs run it through kubectl exec; the PS pod is stopped
 * (SIGTERM, as a deleted pod) and started again with the same command, which resumes from its
 * checkpoint; workers drained by it are restarted (restartPolicy Always) and the run ends.
 *
 * Needs root and iproute2; skipped otherwise.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { HostNet, netnsUnavailable } from './helpers/netns.js';
import { readMetrics, type Actor } from './helpers/processes.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const repo = fileURLToPath(new URL('..', import.meta.url));
const entry = join(repo, 'src', 'cli', 'entry.ts');
const k8s = join(repo, 'deploy', 'kubernetes');
const STEPS = 60;

function manifests(): Obj[] {
  return ['job-config.yaml', 'ps.yaml', 'worker.yaml', 'owner.yaml', 'ps-shard.yaml'].flatMap((f) =>
    parseAllDocuments(readFileSync(join(k8s, f), 'utf8')).map((d) => d.toJS() as Obj),
  );
}
const find = (docs: Obj[], kind: string, name: string) => {
  const d = docs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!d) throw new Error(`no ${kind}/${name} in deploy/kubernetes`);
  return d;
};

interface Pod {
  host: string;
  name: string;
  /** Stands for / of the pod's mounts (/etc/spngd, /var/lib/spngd). */
  root: string;
  spec: Obj;
}

/** Paths of the image and of the mounts, moved to this repository and the pod's directory. */
function relocate(s: string, pod: Pod): string {
  return s
    .replaceAll('node /opt/spngd/bin/spngd.js', `'${process.execPath}' --import tsx '${entry}'`)
    .replaceAll('/opt/spngd/deploy/', `${join(repo, 'deploy')}/`)
    .replaceAll('/etc/spngd/', `${pod.root}/etc/spngd/`)
    .replaceAll('/var/lib/spngd', `${pod.root}/var/lib/spngd`);
}

function relocateArgv(argv: string[], pod: Pod): string[] {
  return argv.flatMap((a) => {
    if (a === 'node') return [process.execPath];
    if (a === '/opt/spngd/bin/spngd.js') return ['--import', 'tsx', entry];
    return [relocate(a, pod)];
  });
}

/** The container's env as the kubelet sets it (downward API: pod IP, name, namespace), paths not relocated. */
function envOf(c: Obj, net: HostNet, pod: Pod): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of (c.env ?? []) as Obj[]) {
    if (typeof e.value === 'string') env[e.name] = e.value;
    const field = e.valueFrom?.fieldRef?.fieldPath;
    if (field === 'status.podIP') env[e.name] = net.address(pod.host);
    if (field === 'metadata.name') env[e.name] = pod.name;
    if (field === 'metadata.namespace') env[e.name] = 'default';
  }
  return env;
}

const expand = (s: string, env: Record<string, string>) => s.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, n: string) => env[n] ?? m);

/** The process environment of a container: its env with paths relocated. */
const processEnv = (env: Record<string, string>, pod: Pod) => Object.fromEntries(Object.entries(env).map(([k, v]) => [k, relocate(v, pod)]));

/** The pod's volumes as directories: Secrets and ConfigMaps with their keys, emptyDirs and claims empty. */
function makeVolumes(pod: Pod, files: { secrets: Record<string, Record<string, string>>; configMaps: Record<string, Record<string, string>> }): void {
  const mounts = [...(pod.spec.initContainers ?? []), ...pod.spec.containers].flatMap((c: Obj) => (c.volumeMounts ?? []) as Obj[]);
  const pathOf = (volume: string) => mounts.find((m) => m.name === volume)?.mountPath as string | undefined;
  for (const v of [...(pod.spec.volumes ?? []), { name: 'data' }] as Obj[]) {
    const path = pathOf(v.name);
    if (!path) continue;
    const dir = relocate(path, pod);
    mkdirSync(dir, { recursive: true });
    const content = v.secret ? files.secrets[v.secret.secretName] : v.configMap ? files.configMaps[v.configMap.name] : undefined;
    for (const [key, source] of Object.entries(content ?? {})) copyFileSync(source, join(dir, key));
  }
}

const reason = netnsUnavailable();
if (reason) console.warn(`netns-kubernetes: skipped: ${reason}`);
const serial = reason ? test.skip : test.serial;

serial(`the manifests' commands run pods that train over mutual TLS, and a restarted PS pod resumes${reason ? ` [skipped: ${reason}]` : ''}`, async (t) => {
  t.timeout(240_000); // a bound for busy machines: about 30 s on two idle cores
  const dir = mkdtempSync(join(tmpdir(), 'spngd-netns-k8s-'));
  t.log(`pods' files and logs in ${dir}`);
  const docs = manifests();

  // The Secrets, made as docs/deployment.md says; the job ConfigMap, made small for a test.
  const secretsDir = join(dir, 'secrets');
  execFileSync(process.execPath, ['--import', 'tsx', entry, 'certs', '--out', secretsDir, '--hosts', 'admin', '--token'], { cwd: repo, stdio: 'ignore' });
  const job = parse(find(docs, 'ConfigMap', 'spngd-job').data['job.yaml']) as Obj;
  Object.assign(job, { steps: STEPS, batchSize: 512, evalEvery: 8, checkpointEvery: 4, data: { trainLimit: 4096, testLimit: 1000 } });
  writeFileSync(join(dir, 'job.yaml'), stringify(job));
  const files = {
    secrets: {
      'spngd-ca': { 'ca.crt': join(secretsDir, 'ca.crt'), 'ca.key': join(secretsDir, 'ca.key') },
      'spngd-token': { token: join(secretsDir, 'token') },
    },
    configMaps: { 'spngd-job': { 'job.yaml': join(dir, 'job.yaml') } },
  };

  const net = HostNet.create(['ps', 'worker-a', 'worker-b', 'owner-a', 'shard-a'], { aliases: { ps: ['spngd-ps-0.spngd-ps'] } });
  let finished = false;
  t.teardown(async () => {
    finished = true;
    await net.destroy();
  });
  const pod = (host: string, name: string, kind: string, workload: string): Pod => {
    const p = { host, name, root: join(dir, name), spec: find(docs, kind, workload).spec.template.spec as Obj };
    makeVolumes(p, files);
    return p;
  };
  const pods = {
    ps: pod('ps', 'spngd-ps-0', 'StatefulSet', 'spngd-ps'),
    workers: [
      pod('worker-a', 'spngd-worker-5d9c8-aaaaa', 'Deployment', 'spngd-worker'),
      pod('worker-b', 'spngd-worker-5d9c8-bbbbb', 'Deployment', 'spngd-worker'),
    ],
    owner: pod('owner-a', 'spngd-owner-7f6b4-ccccc', 'Deployment', 'spngd-owner'),
    shard: pod('shard-a', 'spngd-ps-shard-0', 'StatefulSet', 'spngd-ps-shard'),
  };

  // Init containers: their scripts, as written.
  for (const p of [pods.ps, ...pods.workers, pods.owner, pods.shard]) {
    for (const c of p.spec.initContainers as Obj[]) {
      const env = envOf(c, net, p);
      const argv = relocateArgv(
        [...c.command, ...c.args].map((a: string) => expand(a, env)),
        p,
      );
      const r = await net.runCommand(p.host, argv, processEnv(env, p), 60_000);
      t.is(r.code, 0, `init container ${c.name} of ${p.name}: ${r.stderr}`);
    }
  }

  /** Starts the pod's main container; `restart`: again whenever it exits (restartPolicy Always). */
  const run = (p: Pod, restart: boolean): { current: Actor } => {
    const c = p.spec.containers[0] as Obj;
    const env = envOf(c, net, p);
    const argv = relocateArgv(
      [...c.command, ...c.args].map((a: string) => expand(a, env)),
      p,
    );
    const handle = { current: net.spawn(p.host, p.name, { argv, env: processEnv(env, p) }, dir) };
    const watch = (a: Actor) =>
      void a.exited.then(() => {
        if (!restart || finished) return;
        setTimeout(() => {
          if (finished) return;
          handle.current = net.spawn(p.host, p.name, { argv, env: processEnv(env, p) }, dir);
          watch(handle.current);
        }, 1000);
      });
    watch(handle.current);
    return handle;
  };
  const out = join(pods.ps.root, 'var', 'lib', 'spngd', 'run');
  const steps = () => readMetrics(out).filter((r) => r.type === 'step');
  const untilStep = async (n: number) => {
    const until = Date.now() + 90_000;
    while (!steps().some((r) => r.step >= n)) {
      if (Date.now() > until) throw new Error(`step ${n} not reached`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  let ps = run(pods.ps, false);
  await ps.current.listening;
  const others = [...pods.workers.map((p) => run(p, true)), run(pods.owner, true), run(pods.shard, true)];
  await untilStep(4);

  // Probes, as the manifests state them; and a plaintext check, as the kubelet's native gRPC probe.
  for (const p of [pods.ps, ...pods.workers, pods.owner, pods.shard]) {
    const c = p.spec.containers[0] as Obj;
    const env = processEnv(envOf(c, net, p), p);
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
      const r = await net.runCommand(p.host, relocateArgv(c[probe].exec.command as string[], p), env);
      t.is(r.code, 0, `${probe} of ${p.name}: ${r.stdout}${r.stderr}`);
    }
    const port = String(c.ports[0].containerPort);
    const plain = await net.runCommand(p.host, [process.execPath, join(repo, 'deploy', 'health-probe.mjs'), '--timeout-ms', '1000', port], env);
    t.not(plain.code, 0, `a plaintext health check of ${p.name} is refused`);
  }

  // spngd status, as docs/deployment.md runs it in a pod (kubectl exec).
  const w = pods.workers[0];
  const status = await net.runCommand(
    w.host,
    relocateArgv(
      [
        'node',
        '/opt/spngd/bin/spngd.js',
        'status',
        'spngd-ps-0.spngd-ps:7000',
        '--json',
        '--tls-ca',
        '/etc/spngd/tls/ca.crt',
        '--tls-cert',
        '/etc/spngd/tls/tls.crt',
        '--tls-key',
        '/etc/spngd/tls/tls.key',
        '--token-file',
        '/etc/spngd/token/token',
      ],
      w,
    ),
  );
  t.is(status.code, 0, status.stderr);
  const members = (JSON.parse(status.stdout) as { members: { id: string; address: string }[] }).members.map((m) => `${m.id}@${m.address}`);
  t.true(members.includes(`${pods.owner.name}@${net.address('owner-a')}:7002`), `the owner registered its pod IP: ${members.join(', ')}`);
  t.true(members.includes(`${pods.shard.name}@${net.address('shard-a')}:7003`), `the PS shard registered its pod IP: ${members.join(', ')}`);
  const shards = (JSON.parse(status.stdout) as { psShards: { memberId: string; layers: string[] }[] }).psShards;
  t.deepEqual(
    shards.map((s) => s.memberId),
    ['ps-0', pods.shard.name],
    'the job config spreads the layers over the PS and the shard pod',
  );

  // The PS pod deleted (SIGTERM) and created again with its volume: the same command resumes.
  ps.current.proc.kill('SIGTERM');
  t.is(await ps.current.exited, 0, 'the PS stopped after a checkpoint');
  const stoppedAt = Math.max(...steps().map((r) => r.step));
  t.true(stoppedAt < STEPS, `stopped at step ${stoppedAt}, before the end`);
  ps = run(pods.ps, false);
  t.is(await ps.current.exited, 0, 'the restarted PS finished');
  finished = true;
  const psLog = readFileSync(join(dir, 'spngd-ps-0.log'), 'utf8');
  t.regex(psLog, /resumed from .*checkpoint-\d+\.spngd at step \d+/, 'it resumed from the volume');
  // SIGTERM writes a checkpoint of the last step, so the resumed PS repeats none.
  t.deepEqual(
    steps().map((r) => r.step),
    Array.from({ length: STEPS }, (_, i) => i + 1),
    'every step once, to the end',
  );
  t.true(existsSync(join(out, 'summary.json')));
  t.log(`stopped at step ${stoppedAt} and resumed; members ${members.join(', ')}; ${others.length} pods kept running or restarted`);
});
