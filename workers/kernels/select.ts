/**
 * Picks the compute backend: `blas` (native OpenBLAS) when asked or, under `auto`, when it is
 * built here, else `gpu` (gpu.js: WebGPU where an adapter answers, WebAssembly SIMD otherwise).
 * The gpu.js module is loaded only when it is used.
 */
import type { BackendChoice, ComputeBackend } from '../../src/compute/backend.js';
import { blasAvailable, createBlasBackend } from './blas/blas-backend.js';

export interface SelectedBackend {
  backend: ComputeBackend;
  /** Why this one: e.g. "auto: OpenBLAS addon available" or the reason blas was passed over. */
  reason: string;
}

export async function selectBackend(choice: BackendChoice, opts: { threads?: number } = {}): Promise<SelectedBackend> {
  if (choice === 'blas' || choice === 'auto') {
    const avail = blasAvailable();
    if (avail.ok) {
      const backend = await createBlasBackend(opts.threads === undefined ? {} : { threads: opts.threads });
      return { backend, reason: choice === 'auto' ? 'auto: the OpenBLAS addon is the fastest available' : 'requested' };
    }
    if (choice === 'blas') throw new Error(`--backend blas: the OpenBLAS addon is not available (${avail.reason})`);
    const backend = await createGpu();
    return { backend, reason: `auto: OpenBLAS addon unavailable (${avail.reason})` };
  }
  return { backend: await createGpu(), reason: 'requested' };
}

async function createGpu(): Promise<ComputeBackend> {
  const mod = await import('./gpu/gpu-backend.js');
  return mod.createGpuBackend({ mode: 'auto' });
}
