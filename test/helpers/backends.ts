/**
 * The compute backends that tests run against: the float64 reference always, blas when its addon
 * is built (CI builds it: a missing addon fails there unless SPNGD_SKIP_BLAS_TESTS=1), and gpu.js.
 */
import type { ComputeBackend } from '../../src/compute/backend.js';
import { blasAvailable, createBlasBackend } from '../../workers/kernels/blas/blas-backend.js';
import { createReferenceBackend } from './reference-backend.js';

export interface NamedBackend {
  name: string;
  create: () => Promise<ComputeBackend>;
}

export function testBackends(): NamedBackend[] {
  const out: NamedBackend[] = [{ name: 'reference', create: async () => createReferenceBackend() }];
  if (blasAvailable().ok || process.env.SPNGD_SKIP_BLAS_TESTS !== '1') out.push({ name: 'blas', create: () => createBlasBackend() });
  out.push({
    name: 'gpu',
    create: async () => (await import('../../workers/kernels/gpu/gpu-backend.js')).createGpuBackend({ mode: 'webasm' }),
  });
  return out;
}

/** max |a − b| / max(max |b|, floor): a scale-aware error for float32 results against float64 references. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-12): number {
  if (a.length !== b.length) return Infinity;
  let diff = 0;
  let scale = floor;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

export function flat(rows: number[][]): number[] {
  return rows.flat();
}
