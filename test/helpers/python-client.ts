/**
 * An independent gRPC client for interop tests: Debian's python3-grpcio + python3-protobuf, run
 * with /usr/bin/python3 (the `python3` on PATH may be another interpreter without them). It lists
 * services through server reflection (v1; the request fields are encoded by hand, as Debian has no
 * grpcio-reflection), fetches the file descriptors of the given symbols into a strict descriptor
 * pool, builds the message classes from them (maps, oneofs, proto3 optional), and calls
 * grpc.health.v1.Health/Check and, if asked, spngd.v1.StateService/GetState with those classes.
 *
 * When python3-grpcio is missing, `pythonTest` skips the test with a message saying how to install
 * it, except under CI (CI=true), where the test fails: CI must really run it.
 */
import type { ImplementationFn, TestFn } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/** The interpreter (SPNGD_TEST_PYTHON overrides it, e.g. to check the skip/fail path). */
export const PYTHON = process.env.SPNGD_TEST_PYTHON ?? '/usr/bin/python3';
export const PYTHON_INSTALL_HINT = 'apt-get install -y python3-grpcio python3-protobuf';

const PY_CLIENT = `
import json, sys
import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

plan = json.loads(sys.argv[1])
addr = plan["address"]
timeout = plan.get("timeout", 10)
ch = grpc.insecure_channel(addr)
ident = lambda b: b

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def field_bytes(num, data):
    return varint((num << 3) | 2) + varint(len(data)) + data

def parse(buf):
    """Minimal protobuf wire parser: {field number: [values]} (bytes for length-delimited)."""
    out, i = {}, 0
    while i < len(buf):
        key, shift = 0, 0
        while True:
            b = buf[i]; i += 1
            key |= (b & 0x7F) << shift; shift += 7
            if b < 0x80: break
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, shift = 0, 0
            while True:
                b = buf[i]; i += 1
                v |= (b & 0x7F) << shift; shift += 7
                if b < 0x80: break
        elif wt == 2:
            n, shift = 0, 0
            while True:
                b = buf[i]; i += 1
                n |= (b & 0x7F) << shift; shift += 7
                if b < 0x80: break
            v = buf[i:i + n]; i += n
        elif wt == 1:
            v = buf[i:i + 8]; i += 8
        elif wt == 5:
            v = buf[i:i + 4]; i += 4
        else:
            raise ValueError("wire type %d" % wt)
        out.setdefault(num, []).append(v)
    return out

reflection = ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                              request_serializer=ident, response_deserializer=ident)
# ServerReflectionRequest: list_services = 7, file_containing_symbol = 4.
# ServerReflectionResponse: file_descriptor_response = 4, list_services_response = 6, error_response = 7.
symbols = plan["symbols"]
reqs = [field_bytes(7, b"*")] + [field_bytes(4, s.encode()) for s in symbols]
resps = [parse(r) for r in reflection(iter(reqs), timeout=timeout)]
services = sorted(parse(s)[1][0].decode() for s in parse(resps[0][6][0]).get(1, []))

pool = descriptor_pool.DescriptorPool()
protos = {}
for sym, r in zip(symbols, resps[1:]):
    if 4 not in r:
        raise RuntimeError("reflection has no descriptor for %s" % sym)
    for raw in parse(r[4][0])[1]:
        fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        protos[fd.name] = fd
added = set()
while len(added) < len(protos):
    progress = False
    for name, fd in protos.items():
        if name not in added and all(d in added for d in fd.dependency):
            pool.Add(fd); added.add(name); progress = True
    if not progress:
        raise RuntimeError("unresolvable dependencies: %s" % sorted(set(protos) - added))

def cls(full_name):
    desc = pool.FindMessageTypeByName(full_name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)

out = {"services": services, "files": sorted(protos), "grpc": grpc.__version__}

if plan.get("health") is not None:
    HReq, HRes = cls("grpc.health.v1.HealthCheckRequest"), cls("grpc.health.v1.HealthCheckResponse")
    health = ch.unary_unary("/grpc.health.v1.Health/Check",
                            request_serializer=lambda m: m.SerializeToString(), response_deserializer=HRes.FromString)
    out["health"] = {s: HRes.ServingStatus.Name(health(HReq(service=s), timeout=timeout).status) for s in plan["health"]}

if plan.get("getState"):
    SReq, SRes = cls("spngd.v1.GetStateRequest"), cls("spngd.v1.GetStateResponse")
    get_state = ch.unary_unary("/spngd.v1.StateService/GetState",
                               request_serializer=lambda m: m.SerializeToString(), response_deserializer=SRes.FromString)
    out["state"] = json_format.MessageToDict(get_state(SReq(), timeout=timeout))["state"]

# Shapes that strict descriptor pools reject when descriptors are regenerated: a oneof envelope,
# a map field, a proto3 optional.
checks = {}
def try_type(name):
    try:
        return pool.FindMessageTypeByName(name)
    except KeyError:
        return None
train = try_type("spngd.v1.TrainRequest")
if train is not None:
    checks["train_oneof"] = [f.name for f in train.oneofs_by_name["kind"].fields]
    checks["phase_ms_is_map"] = pool.FindMessageTypeByName("spngd.v1.GradientsComplete").fields_by_name["phase_ms"].message_type.GetOptions().map_entry
actor = try_type("spngd.v1.ActorState")
if actor is not None:
    checks["last_loss_has_presence"] = actor.fields_by_name["last_loss"].containing_oneof is not None
out["checks"] = checks
print(json.dumps(out))
`;

export interface PythonProbePlan {
  /** host:port of the server. */
  address: string;
  /** Symbols whose files are fetched through reflection (with their dependencies). */
  symbols: string[];
  /** Services to Health/Check ("" = the whole server); omitted: no health check. */
  health?: string[];
  /** Call spngd.v1.StateService/GetState (needs "spngd.v1.StateService" among the symbols). */
  getState?: boolean;
  /** Per-RPC timeout, seconds (default 10). */
  timeout?: number;
}

export interface PythonProbeResult {
  /** Services listed by reflection, sorted. */
  services: string[];
  /** Names of the files that went into the descriptor pool, sorted. */
  files: string[];
  grpc: string;
  health?: Record<string, string>;
  /** ActorState in proto3 JSON (camelCase names, 64-bit integers as strings, enums by name). */
  state?: any;
  checks: { train_oneof?: string[]; phase_ms_is_map?: boolean; last_loss_has_presence?: boolean };
}

/** Whether /usr/bin/python3 can import grpc and google.protobuf; the reason when it cannot. */
export function pythonGrpc(): { ok: true } | { ok: false; reason: string } {
  if (!existsSync(PYTHON)) return { ok: false, reason: `${PYTHON} does not exist` };
  const r = spawnSync(PYTHON, ['-c', 'import grpc, google.protobuf'], { encoding: 'utf8', timeout: 30_000 });
  if (r.status === 0) return { ok: true };
  const why = (r.stderr || r.error?.message || '').trim().split('\n').pop() || `exit code ${r.status}`;
  return { ok: false, reason: `${PYTHON} cannot import grpc/google.protobuf (${why})` };
}

/**
 * Runs the Python client against `plan.address`, asynchronously (the server under test usually
 * lives in this process's event loop). Rejects with Python's stderr when it fails.
 */
export function runPythonProbe(plan: PythonProbePlan, timeoutMs = 60_000): Promise<PythonProbeResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, ['-c', PY_CLIENT, JSON.stringify(plan)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) {
        reject(new Error(`python client against ${plan.address} exited with ${signal ?? `code ${code}`}:\n${stderr.trim()}`));
        return;
      }
      try {
        resolve(JSON.parse(stdout) as PythonProbeResult);
      } catch {
        reject(new Error(`python client printed no JSON:\n${stdout}\n${stderr}`));
      }
    });
  });
}

let warned = false;

/**
 * Registers a test that needs the Python client: run when python3-grpcio is there; otherwise
 * skipped with a message locally and failed under CI=true.
 */
export function pythonTest(test: TestFn, title: string, impl: ImplementationFn<[]>): void {
  const available = pythonGrpc();
  if (available.ok) {
    test.serial(title, impl);
  } else if (process.env.CI === 'true') {
    test.serial(title, (t) => {
      t.fail(`${available.reason}; CI must run the Python interop tests (${PYTHON_INSTALL_HINT}, as .ci/run does)`);
    });
  } else {
    if (!warned) {
      warned = true;
      process.stderr.write(`python interop tests skipped: ${available.reason}; install with: ${PYTHON_INSTALL_HINT}\n`);
    }
    test.skip(`${title} (skipped: no python3-grpcio; ${PYTHON_INSTALL_HINT})`, impl);
  }
}
