/**
 * Checks the Kubernetes manifests under deploy/ (or the directory given) without a cluster:
 *
 * - every YAML file parses; every document has apiVersion, kind (one this check knows, with its
 *   apiVersion) and a valid metadata.name; no kind/name twice;
 * - a Kustomization lists every manifest of its directory, and its secret/configMap generators
 *   define Secrets/ConfigMaps (their files, being secrets, need not exist);
 * - Services select the labels of some workload, and their target ports are that workload's
 *   container ports; a StatefulSet's serviceName is a headless Service that selects it;
 * - volumes reference ConfigMaps, Secrets and claims that exist (or claim templates), with the
 *   keys they name; every volumeMount names a volume;
 * - paths under /etc/spngd and /var/lib/spngd in commands, args and probes are inside a mount of
 *   that container, a file of a ConfigMap/Secret mount is one of its keys, and an emptyDir that a
 *   container reads is written by an init container;
 * - $(VAR) references are env vars of the container (Kubernetes leaves unknown ones as they are);
 * - one image for every container (and a Kustomization `images` entry for it);
 * - ports: `--listen HOST:PORT` and probe ports are container ports; `--ps HOST:PORT` names a
 *   Service (or a StatefulSet pod under its Service) with that port;
 * - every container states cpu and memory requests; spngd actors have readiness and liveness probes;
 * - the job config in a ConfigMap is valid for spngd (the same loader as `spngd ps --config`), and
 *   its cluster.minWorkers/minOwners/psShards − 1 do not exceed the replicas of the worker/owner/
 *   ps-shard workloads;
 * - every `--flag` given to `spngd ps|worker|owner|certs|...` is an option of that subcommand
 *   (asked from the CLI itself: `spngd <command> --help`; --no-cli skips this).
 *
 * Usage: tsx scripts/check-manifests.ts [--no-cli] [DIR]   (exit status 1 on any problem)
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { loadTrainConfig } from '../src/config/load.js';

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const skipCli = args.includes('--no-cli');
const deployDir = resolve(args.find((a) => !a.startsWith('--')) ?? join(root, 'deploy'));

/** Paths that must come from a volume (the manifests' convention); /opt/spngd etc. are the image's. */
const MOUNTED_ROOTS = ['/etc/spngd/', '/var/lib/spngd/'];
const KNOWN_KINDS: Record<string, string> = {
  ConfigMap: 'v1',
  Secret: 'v1',
  Service: 'v1',
  PersistentVolumeClaim: 'v1',
  Namespace: 'v1',
  ServiceAccount: 'v1',
  Deployment: 'apps/v1',
  StatefulSet: 'apps/v1',
  Job: 'batch/v1',
  PodDisruptionBudget: 'policy/v1',
  NetworkPolicy: 'networking.k8s.io/v1',
  Kustomization: 'kustomize.config.k8s.io/v1beta1',
};
const WORKLOADS = new Set(['Deployment', 'StatefulSet', 'Job']);
const DNS_1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

interface Doc {
  file: string;
  kind: string;
  name: string;
  body: Obj;
}

const problems = new Set<string>();
const notes = new Set<string>();
const where = (d: Doc, extra = '') => `${relative(root, d.file)}: ${d.kind}/${d.name}${extra ? ` ${extra}` : ''}`;
const problem = (d: Doc | string, message: string) => problems.add(`${typeof d === 'string' ? d : where(d)}: ${message}`);

function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...yamlFiles(p));
    else if (/\.ya?ml$/.test(e.name)) out.push(p);
  }
  return out.sort();
}

// ---- 1. parse, identify -------------------------------------------------------------------------

const docs: Doc[] = [];
const files = yamlFiles(deployDir);
if (files.length === 0) problem(relative(root, deployDir) || '.', 'no YAML files');
for (const file of files) {
  const parsed = parseAllDocuments(readFileSync(file, 'utf8'));
  for (const d of Array.isArray(parsed) ? parsed : [parsed]) {
    for (const e of d.errors) problem(relative(root, file), `YAML: ${e.message.split('\n')[0]}`);
    if (d.errors.length > 0) continue;
    const body = d.toJS() as Obj | null;
    if (body === null || body === undefined) continue; // an empty document (e.g. after a final ---)
    const id = `${relative(root, file)}: document ${body.kind ?? '?'}/${body.metadata?.name ?? '?'}`;
    if (typeof body !== 'object' || Array.isArray(body)) {
      problem(relative(root, file), 'a document that is not a mapping');
      continue;
    }
    if (typeof body.apiVersion !== 'string') problem(id, 'no apiVersion');
    if (typeof body.kind !== 'string') problem(id, 'no kind');
    if (typeof body.metadata?.name !== 'string') problem(id, 'no metadata.name');
    else if (!DNS_1123.test(body.metadata.name) || body.metadata.name.length > 253)
      problem(id, `metadata.name "${body.metadata.name}" is not a valid DNS-1123 name`);
    if (typeof body.kind === 'string' && typeof body.apiVersion === 'string') {
      const want = KNOWN_KINDS[body.kind];
      if (!want) problem(id, `kind ${body.kind} is not one this check knows (typo?)`);
      else if (want !== body.apiVersion) problem(id, `apiVersion ${body.apiVersion}, expected ${want} for ${body.kind}`);
    }
    if (typeof body.kind === 'string' && typeof body.metadata?.name === 'string') docs.push({ file, kind: body.kind, name: body.metadata.name, body });
  }
}
const seen = new Map<string, Doc>();
for (const d of docs) {
  const key = `${d.kind}/${d.name}`;
  const first = seen.get(key);
  if (first) problem(d, `defined twice (also in ${relative(root, first.file)})`);
  else seen.set(key, d);
}
const byKind = (kind: string) => docs.filter((d) => d.kind === kind);

// ---- 2. Kustomization: resources, generated Secrets and ConfigMaps ----------------------------

/** Keys of every ConfigMap and Secret, defined or generated. */
const configMaps = new Map<string, Set<string>>();
const secrets = new Map<string, Set<string>>();
for (const d of byKind('ConfigMap')) configMaps.set(d.name, new Set([...Object.keys(d.body.data ?? {}), ...Object.keys(d.body.binaryData ?? {})]));
for (const d of byKind('Secret')) secrets.set(d.name, new Set([...Object.keys(d.body.data ?? {}), ...Object.keys(d.body.stringData ?? {})]));
const imageNames = new Set<string>();

for (const k of byKind('Kustomization')) {
  const dir = dirname(k.file);
  const listed = new Set<string>();
  for (const r of (k.body.resources ?? []) as string[]) {
    const p = resolve(dir, r);
    listed.add(p);
    try {
      if (!statSync(p).isFile()) problem(k, `resource ${r} is not a file`);
    } catch {
      problem(k, `resource ${r} does not exist`);
    }
  }
  for (const f of files) {
    if (f === k.file || !f.startsWith(`${dir}/`)) continue;
    if (!listed.has(f) && !docs.some((d) => d.file === f && d.kind === 'Kustomization'))
      problem(k, `${relative(dir, f)} is not in resources (kubectl apply -k would leave it out)`);
  }
  const gen = (list: Obj[] | undefined, into: Map<string, Set<string>>, what: string) => {
    for (const g of list ?? []) {
      const keys = new Set<string>();
      for (const f of (g.files ?? []) as string[]) {
        const [key, path] = f.includes('=') ? f.split('=', 2) : [basename(f), f];
        keys.add(key);
        try {
          statSync(resolve(dir, path));
        } catch {
          notes.add(`${relative(root, k.file)}: ${what} ${g.name}: ${path} is not here (create it before kubectl apply -k; see docs/deployment.md)`);
        }
      }
      for (const l of (g.literals ?? []) as string[]) keys.add(l.split('=')[0]);
      if (into.has(g.name)) problem(k, `${what} ${g.name} is generated and also defined`);
      into.set(g.name, keys);
    }
  };
  gen(k.body.secretGenerator, secrets, 'secret');
  gen(k.body.configMapGenerator, configMaps, 'configMap');
  if (k.body.generatorOptions?.disableNameSuffixHash !== true && (k.body.secretGenerator || k.body.configMapGenerator)) {
    notes.add(`${relative(root, k.file)}: generated names get a hash suffix; kustomize rewrites references in the resources it lists`);
  }
  for (const i of (k.body.images ?? []) as Obj[]) imageNames.add(i.name);
}

// ---- 3. workloads ----------------------------------------------------------------------------

interface Container {
  c: Obj;
  init: boolean;
}
const workloads = docs.filter((d) => WORKLOADS.has(d.kind));
const podSpec = (w: Doc): Obj => w.body.spec?.template?.spec ?? {};
const podLabels = (w: Doc): Obj => w.body.spec?.template?.metadata?.labels ?? {};
const containersOf = (w: Doc): Container[] => [
  ...((podSpec(w).initContainers ?? []) as Obj[]).map((c) => ({ c, init: true })),
  ...((podSpec(w).containers ?? []) as Obj[]).map((c) => ({ c, init: false })),
];
const selects = (selector: Obj | undefined, labels: Obj) =>
  !!selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);
const containerPorts = (c: Obj): Obj[] => (c.ports ?? []) as Obj[];
const hasPort = (c: Obj, port: number | string) =>
  containerPorts(c).some((p) => p.containerPort === Number(port) || (typeof port === 'string' && p.name === port));

/** All strings a container runs with: command, args, probe commands. */
function commandLines(c: Obj): { what: string; argv: string[] }[] {
  const out = [{ what: 'command/args', argv: [...((c.command ?? []) as string[]), ...((c.args ?? []) as string[])].map(String) }];
  for (const p of ['startupProbe', 'readinessProbe', 'livenessProbe'])
    if (c[p]?.exec?.command) out.push({ what: p, argv: (c[p].exec.command as unknown[]).map(String) });
  return out;
}

/** The spngd subcommand a container runs and its arguments (direct, or through `sh -c ... "$@"`). */
function spngdInvocations(c: Obj): { sub: string; argv: string[] }[] {
  const cmd = ((c.command ?? []) as unknown[]).map(String);
  const args = ((c.args ?? []) as unknown[]).map(String);
  const out: { sub: string; argv: string[] }[] = [];
  const runsSpngd = (s: string) => /(^|\/)spngd(\.js)?$/.test(s);
  if (cmd.some(runsSpngd) || (cmd.length >= 3 && cmd[0].endsWith('sh') && cmd[1] === '-c' && /spngd\.js"? "\$@"/.test(cmd[2]))) {
    if (args.length > 0) out.push({ sub: args[0], argv: args.slice(1) });
  }
  // Shell scripts: "... spngd.js SUB --flag value \<newline> --flag ..."
  for (const s of [...cmd, ...args]) {
    const joined = s.replace(/\\\n/g, ' ');
    for (const m of joined.matchAll(/spngd(?:\.js)?\s+([a-z][a-z-]*)([^\n;&|]*)/g)) out.push({ sub: m[1], argv: m[2].trim().split(/\s+/).filter(Boolean) });
  }
  return out;
}

const flagValue = (argv: string[], flag: string): string | undefined => {
  const i = argv.indexOf(flag);
  if (i >= 0) return argv[i + 1];
  return argv.find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1);
};

const replicas = new Map<string, number>(); // spngd subcommand → replicas of workloads running it
const allImages = new Map<string, string[]>();

for (const w of workloads) {
  const spec = podSpec(w);
  if (!selects(w.body.spec?.selector?.matchLabels, podLabels(w))) problem(w, 'spec.selector.matchLabels do not match the pod template labels');
  const volumes = new Map<string, Obj>(((spec.volumes ?? []) as Obj[]).map((v) => [v.name, v]));
  const claimTemplates = new Set<string>(((w.body.spec?.volumeClaimTemplates ?? []) as Obj[]).map((t) => t.metadata?.name));
  for (const t of claimTemplates) if (volumes.has(t)) problem(w, `volume ${t} is both a pod volume and a claim template`);

  // Volumes → ConfigMaps, Secrets, claims.
  for (const v of volumes.values()) {
    const keysOf = (map: Map<string, Set<string>>, name: string, what: string): Set<string> | undefined => {
      const keys = map.get(name);
      if (!keys) problem(w, `volume ${v.name}: ${what} ${name} is not defined (nor generated) under ${relative(root, deployDir)}`);
      return keys;
    };
    const checkItems = (keys: Set<string> | undefined, items: Obj[] | undefined, what: string) => {
      for (const it of items ?? []) if (keys && !keys.has(it.key)) problem(w, `volume ${v.name}: ${what} has no key ${it.key}`);
    };
    if (v.configMap) checkItems(keysOf(configMaps, v.configMap.name, 'ConfigMap'), v.configMap.items, `ConfigMap ${v.configMap.name}`);
    if (v.secret) checkItems(keysOf(secrets, v.secret.secretName, 'Secret'), v.secret.items, `Secret ${v.secret.secretName}`);
    if (v.persistentVolumeClaim && !byKind('PersistentVolumeClaim').some((p) => p.name === v.persistentVolumeClaim.claimName)) {
      problem(w, `volume ${v.name}: PersistentVolumeClaim ${v.persistentVolumeClaim.claimName} is not defined`);
    }
  }
  /** The file names a volume provides (undefined: any, e.g. a claim or an emptyDir). */
  const volumeFiles = (name: string): Set<string> | undefined => {
    const v = volumes.get(name);
    if (!v) return undefined;
    if (v.configMap) return v.configMap.items ? new Set((v.configMap.items as Obj[]).map((i) => i.path)) : configMaps.get(v.configMap.name);
    if (v.secret) return v.secret.items ? new Set((v.secret.items as Obj[]).map((i) => i.path)) : secrets.get(v.secret.secretName);
    return undefined;
  };
  const writtenByInit = new Set<string>();
  for (const { c, init } of containersOf(w)) if (init) for (const m of (c.volumeMounts ?? []) as Obj[]) if (!m.readOnly) writtenByInit.add(m.name);

  for (const { c, init } of containersOf(w)) {
    const cname = `container ${c.name}`;
    const image = String(c.image ?? '');
    if (!image) problem(w, `${cname}: no image`);
    allImages.set(image, [...(allImages.get(image) ?? []), `${w.kind}/${w.name} ${c.name}`]);
    if (!c.resources?.requests?.cpu || !c.resources?.requests?.memory) problem(w, `${cname}: no cpu and memory requests`);

    const mounts = (c.volumeMounts ?? []) as Obj[];
    const mountPaths = new Set<string>();
    for (const m of mounts) {
      if (!volumes.has(m.name) && !claimTemplates.has(m.name)) problem(w, `${cname}: volumeMount ${m.name} names no volume or claim template`);
      if (mountPaths.has(m.mountPath)) problem(w, `${cname}: two mounts at ${m.mountPath}`);
      mountPaths.add(m.mountPath);
    }

    // Environment: $(VAR) references.
    const env = new Map<string, string | undefined>(((c.env ?? []) as Obj[]).map((e) => [e.name, typeof e.value === 'string' ? e.value : undefined]));
    const expand = (s: string) => s.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, n: string) => env.get(n) ?? m);
    for (const { what, argv } of commandLines(c)) {
      for (const a of argv) {
        for (const m of a.matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g))
          if (!env.has(m[1])) problem(w, `${cname} ${what}: $(${m[1]}) is not an env var of the container (Kubernetes would pass it literally)`);
      }
      if (what !== 'command/args' && /\$\(/.test(argv.join(' '))) problem(w, `${cname} ${what}: probe commands get no $(VAR) expansion`);

      // Mounted paths.
      for (const a of argv.map(expand)) {
        for (const m of a.matchAll(/(?:^|[\s"'=])(\/[A-Za-z0-9._\-/]+)/g)) {
          const path = m[1];
          if (!MOUNTED_ROOTS.some((r) => path.startsWith(r) || `${path}/` === r)) continue;
          const mount = mounts
            .filter((x) => path === x.mountPath || path.startsWith(`${String(x.mountPath).replace(/\/$/, '')}/`))
            .sort((x, y) => y.mountPath.length - x.mountPath.length)[0];
          if (!mount) {
            problem(w, `${cname} ${what}: ${path} is not inside any of its volumeMounts`);
            continue;
          }
          const rest = path.slice(String(mount.mountPath).replace(/\/$/, '').length + 1);
          const provided = volumeFiles(mount.name);
          if (provided && rest && !provided.has(rest.split('/')[0]))
            problem(w, `${cname} ${what}: ${path}: volume ${mount.name} has no key ${rest.split('/')[0]} (it has ${[...provided].join(', ')})`);
          if (!init && volumes.get(mount.name)?.emptyDir && !writtenByInit.has(mount.name))
            problem(w, `${cname} ${what}: ${path} is on emptyDir ${mount.name}, which no init container writes`);
        }
      }
    }

    // Ports.
    const invocations = spngdInvocations(c);
    for (const { sub, argv } of invocations.map((x) => ({ ...x, argv: x.argv.map(expand) }))) {
      const listen = flagValue(argv, '--listen');
      if (listen) {
        const port = /:(\d+)$/.exec(listen)?.[1];
        if (!port) problem(w, `${cname}: --listen ${listen} has no port`);
        else if (!hasPort(c, Number(port))) problem(w, `${cname}: --listen port ${port} is not one of its containerPorts`);
      }
      const ps = flagValue(argv, '--ps');
      if (ps) checkPeer(w, cname, ps);
      if (!init && ['ps', 'worker', 'owner', 'ps-shard'].includes(sub)) {
        replicas.set(sub, (replicas.get(sub) ?? 0) + Number(w.body.spec?.replicas ?? 1));
        if (!c.readinessProbe || !c.livenessProbe) problem(w, `${cname}: spngd ${sub} without readiness and liveness probes`);
      }
    }
    for (const p of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      const probe = c[p];
      if (!probe) continue;
      const port =
        probe.grpc?.port ??
        probe.tcpSocket?.port ??
        probe.httpGet?.port ??
        (probe.exec
          ? [...(probe.exec.command as unknown[])]
              .reverse()
              .map(String)
              .find((a) => /^\d+$/.test(a))
          : undefined);
      if (port === undefined) problem(w, `${cname} ${p}: cannot tell which port it checks`);
      else if (!hasPort(c, port)) problem(w, `${cname} ${p}: port ${port} is not one of its containerPorts`);
    }
  }

  if (w.kind === 'StatefulSet') {
    const svc = byKind('Service').find((s) => s.name === w.body.spec?.serviceName);
    if (!svc) problem(w, `serviceName ${w.body.spec?.serviceName} is not a Service here`);
    else {
      if (svc.body.spec?.clusterIP !== 'None') problem(w, `serviceName ${svc.name} is not headless (clusterIP: None), so its pods get no stable DNS names`);
      if (!selects(svc.body.spec?.selector, podLabels(w))) problem(w, `Service ${svc.name} does not select its pods`);
    }
  }
}

/** `--ps HOST:PORT`: a Service, or pod N of a StatefulSet under its headless Service; PORT one of its ports. */
function checkPeer(w: Doc, cname: string, address: string): void {
  const m = /^([^:]+):(\d+)$/.exec(address);
  if (!m) {
    problem(w, `${cname}: --ps ${address} is not HOST:PORT`);
    return;
  }
  const labels = m[1].split('.');
  let svcName = labels[0];
  if (labels.length >= 2 && /-(\d+)$/.test(labels[0])) {
    const sts = labels[0].replace(/-\d+$/, '');
    const ordinal = Number(/-(\d+)$/.exec(labels[0])![1]);
    const set = byKind('StatefulSet').find((s) => s.name === sts);
    if (!set) {
      problem(w, `${cname}: --ps ${address}: no StatefulSet ${sts}`);
      return;
    }
    if (set.body.spec?.serviceName !== labels[1]) {
      problem(w, `${cname}: --ps ${address}: StatefulSet ${sts} is under Service ${set.body.spec?.serviceName}, not ${labels[1]}`);
      return;
    }
    if (ordinal >= Number(set.body.spec?.replicas ?? 1)) problem(w, `${cname}: --ps ${address}: StatefulSet ${sts} has no pod ${ordinal}`);
    svcName = labels[1];
  }
  const svc = byKind('Service').find((s) => s.name === svcName);
  if (!svc) {
    problem(w, `${cname}: --ps ${address}: no Service ${svcName}`);
    return;
  }
  if (!((svc.body.spec?.ports ?? []) as Obj[]).some((p) => p.port === Number(m[2])))
    problem(w, `${cname}: --ps ${address}: Service ${svcName} has no port ${m[2]}`);
}

// ---- 4. Services ------------------------------------------------------------------------------

for (const s of byKind('Service')) {
  const selector = s.body.spec?.selector;
  const targets = workloads.filter((w) => selects(selector, podLabels(w)));
  if (targets.length === 0) problem(s, `selector ${JSON.stringify(selector ?? {})} matches no workload's pod labels`);
  for (const p of (s.body.spec?.ports ?? []) as Obj[]) {
    const target = p.targetPort ?? p.port;
    for (const w of targets) {
      if (!containersOf(w).some(({ c, init }) => !init && hasPort(c, target)))
        problem(s, `port ${p.port}: targetPort ${target} is not a container port of ${w.kind}/${w.name}`);
    }
  }
}

// ---- 5. one image -----------------------------------------------------------------------------

const repo = (image: string) => image.replace(/@.*$/, '').replace(/:[^/:]*$/, '');
if (new Set([...allImages.keys()].map(repo)).size > 1 || allImages.size > 1) {
  problems.add(`images differ between containers: ${[...allImages].map(([i, cs]) => `${i} (${cs.join(', ')})`).join('; ')}`);
}
if (imageNames.size > 0)
  for (const i of allImages.keys())
    if (!imageNames.has(repo(i))) problems.add(`image ${i} has no entry in the Kustomization's images (so kustomize edit set image would miss it)`);

// ---- 6. job config ----------------------------------------------------------------------------

const tmp = mkdtempSync(join(tmpdir(), 'spngd-check-'));
try {
  for (const d of byKind('ConfigMap')) {
    const mounted = workloads.some(
      (w) =>
        containersOf(w).some(({ c }) => spngdInvocations(c).some((x) => x.sub === 'ps' && flagValue(x.argv, '--config'))) &&
        ((podSpec(w).volumes ?? []) as Obj[]).some((v) => v.configMap?.name === d.name),
    );
    if (!mounted) continue;
    for (const [key, text] of Object.entries((d.body.data ?? {}) as Record<string, string>)) {
      if (!/\.(ya?ml|json)$/.test(key)) continue;
      const file = join(tmp, key);
      writeFileSync(file, text);
      try {
        const config = loadTrainConfig(file);
        for (const [role, key2, min] of [
          ['worker', 'minWorkers', config.cluster.minWorkers],
          ['owner', 'minOwners', config.optimizer.kind === 'spngd' ? config.cluster.minOwners : 0],
          ['ps-shard', 'psShards - 1', config.cluster.psShards - 1],
        ] as const) {
          const n = replicas.get(role) ?? 0;
          if (min > n) problem(d, `${key}: cluster.${key2} is ${min} but the ${role} workloads have ${n} replicas: the PS would never start`);
        }
      } catch (err) {
        problem(d, `${key}: ${(err as Error).message.replace(file, key)}`);
      }
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

// ---- 7. CLI flags -----------------------------------------------------------------------------

if (!skipCli) {
  const entry = join(root, 'src', 'cli', 'entry.ts');
  const optionsCache = new Map<string, Set<string> | string>();
  const optionsOf = (sub: string): Set<string> | string => {
    let o = optionsCache.get(sub);
    if (o === undefined) {
      const r = spawnSync(process.execPath, ['--import', 'tsx', entry, sub, '--help'], { encoding: 'utf8', cwd: root, timeout: 60_000 });
      if (r.status !== 0) o = `\`spngd ${sub} --help\` failed: ${(r.stderr || r.stdout).trim().split('\n')[0]}`;
      else o = new Set([...r.stdout.matchAll(/^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)/gm)].map((m) => m[1]));
      optionsCache.set(sub, o);
    }
    return o;
  };
  for (const w of workloads) {
    for (const { c } of containersOf(w)) {
      for (const { sub, argv } of spngdInvocations(c)) {
        const known = optionsOf(sub);
        if (typeof known === 'string') {
          problem(w, `container ${c.name}: ${known}`);
          continue;
        }
        for (const a of argv) {
          const flag = /^(--[a-z][a-z0-9-]*)/.exec(a)?.[1];
          if (flag && !known.has(flag)) problem(w, `container ${c.name}: spngd ${sub} has no option ${flag}`);
        }
      }
    }
  }
}

// ---- report -----------------------------------------------------------------------------------

for (const n of notes) console.log(`note: ${n}`);
if (problems.size > 0) {
  for (const p of problems) console.error(`error: ${p}`);
  console.error(`check-manifests: ${problems.size} problem(s) in ${relative(root, deployDir) || '.'}`);
  process.exit(1);
}
console.log(
  `check-manifests: ${docs.length} documents in ${files.length} files under ${relative(root, deployDir) || '.'}: OK${skipCli ? ' (CLI flags not checked)' : ''}`,
);
