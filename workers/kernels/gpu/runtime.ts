/**
 * The gpu.js side of the gpu backend: choosing the mode, creating kernels, checking that gpu.js
 * really runs them on that mode, caching them by shape, and sharing one worker pool.
 *
 * Modes are explicit. gpu.js's default and 'async' modes silently pick headlessgl (3-5x slower than
 * webasm here on a software renderer) and degrade to its cpu backend in some cases; this module asks
 * for 'webgpu' or 'webasm' by name and, after a kernel's first call, checks which backend actually
 * ran it (`kernel.constructor.mode`, `fallbackReason`), throwing GpuFallbackError otherwise.
 *
 * Worker threads (webasm): gpu.js gives every threaded kernel its own worker pool, and one kernel
 * is compiled per output size, so a model with tens of shapes would hold tens of pools (measured
 * ~18 MB per 2-worker pool). Pool entries are keyed by process-unique ids, so the first pool gpu.js
 * creates is handed to every later kernel (the kernel's `_pool` field, before its first threaded
 * call). When the internals do not look as expected, each kernel simply keeps its own pool.
 */
import { availableParallelism } from 'node:os';
import { GPU, type IKernelRunShortcut, type KernelOutput, type KernelVariable } from 'gpu.js';

export type GpuMode = 'webgpu' | 'webasm';
export type GpuModeRequest = 'auto' | GpuMode;

/** A kernel ran on another gpu.js backend than the one asked for. */
export class GpuFallbackError extends Error {
  constructor(
    readonly expected: GpuMode,
    readonly actual: string,
    readonly reason: string | null,
  ) {
    super(`gpu.js ran a kernel on '${actual}' instead of '${expected}'${reason ? `: ${reason}` : ''}`);
    this.name = 'GpuFallbackError';
  }
}

/** The webgpu probe's outcome; `note` says why webgpu was or was not used. */
export interface ModeDecision {
  mode: GpuMode;
  note: string;
}

let installedNavigator: { previous: PropertyDescriptor | undefined } | undefined;

function hasNavigatorGpu(): boolean {
  const nav = (globalThis as { navigator?: { gpu?: unknown } }).navigator;
  return nav !== undefined && nav.gpu !== undefined && nav.gpu !== null;
}

/**
 * Node has no `navigator.gpu`; the npm `webgpu` package (Dawn, a gpu.js dependency) provides one.
 * Its pinned binary may not even load on an older glibc: every failure just means "no webgpu".
 */
async function installNodeWebGpu(): Promise<string | undefined> {
  if (hasNavigatorGpu()) return undefined;
  try {
    const spec = 'webgpu';
    const mod = (await import(spec)) as { create: (flags: string[]) => unknown; globals: Record<string, unknown> };
    Object.assign(globalThis, mod.globals);
    const previous = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
    const base = (globalThis as { navigator?: object }).navigator ?? {};
    const nav = Object.create(base) as Record<string, unknown>;
    nav.gpu = mod.create([]);
    Object.defineProperty(globalThis, 'navigator', { value: nav, configurable: true, writable: true, enumerable: true });
    installedNavigator = { previous };
    return undefined;
  } catch (err) {
    return `the webgpu package did not load (${firstLine(err)})`;
  }
}

/** Undoes installNodeWebGpu: Dawn keeps the process alive while `navigator.gpu` is referenced. */
export function uninstallNodeWebGpu(): void {
  if (installedNavigator === undefined) return;
  const { previous } = installedNavigator;
  installedNavigator = undefined;
  if (previous) Object.defineProperty(globalThis, 'navigator', previous);
  else delete (globalThis as { navigator?: unknown }).navigator;
}

function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split('\n')[0].slice(0, 200);
}

/** webgpu where an adapter answers (auto), the requested mode otherwise. Throws when it cannot run. */
export async function decideMode(request: GpuModeRequest): Promise<ModeDecision> {
  if (request === 'webasm') {
    if (!GPU.isWebAssemblySupported) throw new Error('gpu.js webasm: WebAssembly is not supported here');
    return { mode: 'webasm', note: 'requested' };
  }
  const loadProblem = await installNodeWebGpu();
  let available = false;
  let probeProblem: string | undefined = loadProblem;
  if (loadProblem === undefined) {
    try {
      available = await GPU.isWebGPUAvailable();
      if (!available) probeProblem = 'no WebGPU adapter answered';
    } catch (err) {
      probeProblem = `the WebGPU probe failed (${firstLine(err)})`;
    }
  }
  if (available) return { mode: 'webgpu', note: request === 'auto' ? 'auto: a WebGPU adapter answered' : 'requested' };
  uninstallNodeWebGpu();
  if (request === 'webgpu') throw new Error(`gpu.js webgpu requested but unavailable: ${probeProblem}`);
  if (!GPU.isWebAssemblySupported) throw new Error(`gpu.js: neither webgpu (${probeProblem}) nor WebAssembly is available`);
  return { mode: 'webasm', note: `auto: ${probeProblem}` };
}

/** Minimal structural view of gpu.js's webasm worker pool (internal). */
interface WasmPool {
  size: number;
  destroyed: boolean;
  liveWorkerCount?: number;
  dispatch: (...args: unknown[]) => Promise<void>;
  release: (id: number) => void;
  destroy: () => void;
}

/** Minimal structural view of a webasm kernel's internals used for pool sharing. */
interface WasmKernelInternals {
  _pool?: WasmPool | null;
  _moduleCache?: Map<string, { id: number; shared: boolean }>;
  _threadedTail?: Promise<unknown>;
  _shapeOutput?: (data: Float32Array, output: number[], components: number) => unknown;
  _lastRunPath?: string | null;
  fallbackReason?: string | null;
}

function isWasmPool(p: unknown): p is WasmPool {
  const q = p as Partial<WasmPool> | null | undefined;
  return !!q && typeof q.dispatch === 'function' && typeof q.release === 'function' && typeof q.destroy === 'function' && typeof q.size === 'number';
}

export interface KernelSpec {
  /** Cache key: kind and every shape parameter baked into the source. */
  key: string;
  source: string;
  /** gpu.js output: [x], [x, y] or [x, y, z]. */
  output: number[];
  constants?: Record<string, number>;
  /** Values per output cell: 1, or 4 for Array(4) kernels. */
  components: 1 | 4;
  /** Run on the worker pool (webasm asyncMode; outputs of at least 4096 cells). */
  threaded: boolean;
  /** Bytes of arguments the kernel's memory holds, for the cache budget. */
  argBytes: number;
}

/** One compiled gpu.js kernel for one shape. */
export class CompiledKernel {
  readonly cells: number;
  readonly length: number;
  readonly bytes: number;
  private verified = false;
  private inflight = 0;
  private drained: Array<() => void> = [];
  private destroyed = false;

  constructor(
    private readonly runtime: GpuRuntime,
    readonly spec: KernelSpec,
    private readonly shortcut: IKernelRunShortcut,
  ) {
    this.cells = spec.output.reduce((p, v) => p * v, 1);
    this.length = this.cells * spec.components;
    this.bytes = spec.argBytes + this.length * 4;
  }

  /** Runs the kernel; resolves to its flat output (cells × components values, row-major over the output). */
  async run(...args: KernelVariable[]): Promise<Float32Array> {
    if (this.destroyed) throw new Error(`gpu kernel ${this.spec.key} was disposed`);
    this.inflight++;
    try {
      const inner = this.shortcut.kernel as unknown as WasmKernelInternals;
      if (this.spec.threaded) this.runtime.lendPool(inner);
      const result = (await (this.shortcut(...args) as unknown as Promise<KernelOutput> | KernelOutput)) as unknown;
      if (!this.verified) {
        this.runtime.verifyBackend(this.shortcut);
        if (this.spec.threaded) this.runtime.adoptPool(inner);
        this.runtime.flattenOutputs(inner);
        this.verified = true;
      }
      return flattenOutput(result, this.length);
    } finally {
      this.inflight--;
      if (this.inflight === 0) for (const resolve of this.drained.splice(0)) resolve();
    }
  }

  /** How gpu.js ran the last call ('simd', 'scalar', 'threaded', ...; webasm only, diagnostics). */
  get lastRunPath(): string | undefined {
    const path = (this.shortcut.kernel as unknown as WasmKernelInternals)._lastRunPath;
    return typeof path === 'string' ? path : undefined;
  }

  /** Waits for calls in flight, returns the shared pool's entries, and destroys the kernel. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    if (this.inflight > 0) await new Promise<void>((resolve) => this.drained.push(resolve));
    const inner = this.shortcut.kernel as unknown as WasmKernelInternals;
    this.runtime.returnPool(inner);
    this.shortcut.destroy();
  }
}

/**
 * A gpu.js result as one flat Float32Array. Scalar kernels return a typed array or rows of views into
 * one buffer; Array(4) kernels return nested arrays of 4-value views. When the views cover one
 * contiguous buffer in order, that buffer is used without copying; otherwise values are copied.
 */
export function flattenOutput(result: unknown, length: number): Float32Array {
  if (result instanceof Float32Array) {
    if (result.length < length) throw new Error(`gpu kernel returned ${result.length} values, expected ${length}`);
    return result.length === length ? result : result.subarray(0, length);
  }
  if (!Array.isArray(result)) throw new Error('gpu kernel returned no array');
  let first: unknown = result;
  while (Array.isArray(first)) first = first[0];
  let last: unknown = result;
  while (Array.isArray(last)) last = last[last.length - 1];
  if (first instanceof Float32Array && last instanceof Float32Array && first.buffer === last.buffer) {
    const start = first.byteOffset;
    const end = last.byteOffset + last.byteLength;
    if (end - start === length * 4) return new Float32Array(first.buffer, start, length);
  }
  const out = new Float32Array(length);
  let pos = 0;
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) for (const e of v) walk(e);
    else if (ArrayBuffer.isView(v)) {
      out.set(v as Float32Array, pos);
      pos += (v as Float32Array).length;
    } else {
      out[pos++] = v as number;
    }
  };
  walk(result);
  if (pos !== length) throw new Error(`gpu kernel returned ${pos} values, expected ${length}`);
  return out;
}

export interface GpuRuntimeOptions {
  mode: GpuMode;
  /** Worker threads for threaded webasm kernels (default: available parallelism). */
  threads?: number;
  /** At most this many compiled kernels are kept (LRU; default 48). */
  maxKernels?: number;
  /** And at most this many bytes of kernel memory (default 768 MiB). */
  maxBytes?: number;
}

/** One gpu.js instance in one mode, with a bounded LRU cache of compiled kernels. */
export class GpuRuntime {
  readonly mode: GpuMode;
  readonly threads: number;
  private gpu: GPU | undefined;
  private readonly cache = new Map<string, CompiledKernel>();
  private cachedBytes = 0;
  private readonly maxKernels: number;
  private readonly maxBytes: number;
  private pool: WasmPool | undefined;
  private retiredPool: WasmPool | undefined;
  private pending: Array<Promise<void>> = [];
  /** Whether kernels share one worker pool (false when gpu.js internals do not match). */
  poolSharing = true;

  constructor(opts: GpuRuntimeOptions) {
    this.mode = opts.mode;
    this.threads = Math.max(1, Math.floor(opts.threads ?? availableParallelism()));
    this.maxKernels = Math.max(1, opts.maxKernels ?? 48);
    this.maxBytes = Math.max(1, opts.maxBytes ?? 768 * 1024 * 1024);
    this.gpu = new GPU({ mode: opts.mode });
  }

  /** The cached kernel for `spec.key`, compiling (and evicting least recently used ones) on a miss. */
  kernel(spec: KernelSpec): CompiledKernel {
    const hit = this.cache.get(spec.key);
    if (hit) {
      this.cache.delete(spec.key);
      this.cache.set(spec.key, hit);
      return hit;
    }
    const compiled = this.compile(spec);
    this.cache.set(spec.key, compiled);
    this.cachedBytes += compiled.bytes;
    while (this.cache.size > 1 && (this.cache.size > this.maxKernels || this.cachedBytes > this.maxBytes)) {
      const [oldestKey, oldest] = this.cache.entries().next().value as [string, CompiledKernel];
      this.cache.delete(oldestKey);
      this.cachedBytes -= oldest.bytes;
      this.track(oldest.destroy());
    }
    return compiled;
  }

  /** A kernel outside the cache (benchmarks); the caller destroys it. */
  compile(spec: KernelSpec): CompiledKernel {
    const gpu = this.live();
    const shortcut = gpu.createKernel(spec.source, {
      output: spec.output,
      constants: spec.constants ?? {},
      strictIntegers: true,
      asyncMode: this.mode === 'webgpu' || spec.threaded,
      poolSize: this.threads,
      dynamicOutput: false,
      dynamicArguments: false,
      tactic: 'precision',
    });
    return new CompiledKernel(this, spec, shortcut);
  }

  /** Whether a kernel the size rule wants threaded really runs on the pool (2+ threads, webasm). */
  threaded(big: boolean): boolean {
    return big && this.threads >= 2;
  }

  get cachedKernels(): number {
    return this.cache.size;
  }

  /** The cached kernels, least recently used first (diagnostics). */
  cachedKernelList(): CompiledKernel[] {
    return [...this.cache.values()];
  }

  /** Live worker threads of the shared pool (0 before the first threaded call and after dispose). */
  get poolWorkers(): number {
    const pool = this.pool ?? this.retiredPool;
    return pool !== undefined && typeof pool.liveWorkerCount === 'number' ? pool.liveWorkerCount : 0;
  }

  /** Throws GpuFallbackError unless the kernel ran on this runtime's mode. */
  verifyBackend(shortcut: IKernelRunShortcut): void {
    const inner = shortcut.kernel as unknown as { constructor: { mode?: string }; fallbackReason?: string | null };
    const actual = inner.constructor.mode ?? 'unknown';
    const reason = inner.fallbackReason ?? (shortcut as unknown as { fallbackReason?: string | null }).fallbackReason ?? null;
    if (actual !== this.mode || reason) throw new GpuFallbackError(this.mode, actual, reason);
  }

  /** Before a threaded call: give the kernel the shared pool if it has none yet. */
  lendPool(inner: WasmKernelInternals): void {
    if (this.mode !== 'webasm' || !this.poolSharing || this.pool === undefined || this.pool.destroyed) return;
    if (!('_pool' in inner)) {
      this.poolSharing = false;
      return;
    }
    if (inner._pool === null || inner._pool === undefined) inner._pool = this.pool;
  }

  /** After a kernel's first threaded call: its pool becomes the shared one if there is none yet. */
  adoptPool(inner: WasmKernelInternals): void {
    if (this.mode !== 'webasm' || !this.poolSharing) return;
    if (this.pool !== undefined && !this.pool.destroyed) return;
    if (isWasmPool(inner._pool) && inner._moduleCache instanceof Map) this.pool = inner._pool;
    else this.poolSharing = false;
  }

  /**
   * Skips gpu.js's reshaping of results into nested arrays (for an Array(4) output, one 4-value view
   * per cell: ~6 ms per 65k cells): the flat result is used as is. Checked on every call by
   * flattenOutput, so a gpu.js that changes this only loses the shortcut.
   */
  flattenOutputs(inner: WasmKernelInternals): void {
    if (this.mode === 'webasm' && typeof inner._shapeOutput === 'function') {
      inner._shapeOutput = (data: Float32Array) => data;
    }
  }

  /** Before destroying a kernel: detach the shared pool and drop the kernel's entries from the workers. */
  returnPool(inner: WasmKernelInternals): void {
    const pool = this.pool;
    if (pool === undefined || inner._pool !== pool) return;
    if (inner._moduleCache instanceof Map && !pool.destroyed) {
      for (const entry of inner._moduleCache.values()) if (entry.shared) pool.release(entry.id);
    }
    inner._pool = null;
  }

  private track(p: Promise<void>): void {
    const tracked = p
      .catch(() => undefined)
      .finally(() => {
        this.pending = this.pending.filter((q) => q !== tracked);
      });
    this.pending.push(tracked);
  }

  private live(): GPU {
    if (this.gpu === undefined) throw new Error('the gpu backend has been disposed');
    return this.gpu;
  }

  /** Destroys every kernel, the shared pool (terminating its workers) and the gpu.js instance. */
  async dispose(): Promise<void> {
    const gpu = this.gpu;
    if (gpu === undefined) return;
    this.gpu = undefined;
    const kernels = [...this.cache.values()];
    this.cache.clear();
    this.cachedBytes = 0;
    await Promise.all(kernels.map((k) => k.destroy().catch(() => undefined)));
    await Promise.all(this.pending);
    if (this.pool !== undefined) {
      this.pool.destroy();
      this.retiredPool = this.pool;
      this.pool = undefined;
    }
    await gpu.destroy();
    if (this.mode === 'webgpu') uninstallNodeWebGpu();
  }
}
