/**
 * Damped Kronecker-factor inverses and their application to a gradient (docs/numerics.md § Damping and inversion):
 * dW_nat = (G + (√λ/π)·I)⁻¹ · [dW | db] · (A + π·√λ·I)⁻¹, with π the factored-Tikhonov
 * correction; BN uses its unit-wise 2×2 blocks (F_c + λ·I)⁻¹ in closed form.
 */
import { NotPositiveDefiniteError, type ComputeBackend } from '../compute/backend.js';
import { addDiagonal, probeInverseResidual, trace } from './symmetric.js';

export interface DampingConfig {
  /** Tikhonov damping λ. */
  lambda: number;
  /** Weight decay; the effective damping is max(λ, weight decay). */
  weightDecay: number;
  /** Use the π correction; off gives √λ on both factors. */
  piCorrection: boolean;
}

/** A layer's preconditioner as the PS applies it. */
export type Preconditioner =
  | {
      kind: 'kron';
      /** Order of A (in+1) and G (out). */
      orderA: number;
      orderG: number;
      /** Damped inverses, full row-major float32 (the PS multiplies in float32). */
      aInv: Float32Array;
      gInv: Float32Array;
      pi: number;
      /** Damping actually added to A and G (raised when a factor was not positive definite). */
      shiftA: number;
      shiftG: number;
      residualA: number;
      residualG: number;
    }
  | {
      kind: 'unit';
      channels: number;
      /** C blocks of the 2×2 inverse (γγ, γβ, βγ, ββ). */
      inv: Float32Array;
      shift: number;
    };

export function effectiveDamping(d: DampingConfig): number {
  return Math.max(d.lambda, d.weightDecay);
}

/** π = √((tr A / dim A) / (tr G / dim G)); 1 when either trace vanishes. */
export function piCorrection(orderA: number, a: Float64Array, orderG: number, g: Float64Array): number {
  const ta = trace(orderA, a) / orderA;
  const tg = trace(orderG, g) / orderG;
  if (!(ta > 0) || !(tg > 0) || !Number.isFinite(ta) || !Number.isFinite(tg)) return 1;
  return Math.sqrt(ta / tg);
}

/** How many times damping may be raised ×10 for a factor that is not positive definite. */
const maxDampingRaises = 6;

/**
 * Inverse of m + shift·I by Cholesky; when that fails the shift is raised tenfold (and the
 * caller is told through `onRaise`), so one bad factor never stops training.
 */
export async function dampedInverse(
  backend: ComputeBackend,
  n: number,
  m: Float64Array,
  shift: number,
  onRaise?: (from: number, to: number) => void,
): Promise<{ inv: Float64Array; shift: number; damped: Float64Array }> {
  let s = shift;
  for (let attempt = 0; ; attempt++) {
    try {
      const damped = addDiagonal(n, m, s);
      return { inv: await backend.spdInverse(n, damped), shift: s, damped };
    } catch (err) {
      if (!(err instanceof NotPositiveDefiniteError) || attempt >= maxDampingRaises) throw err;
      const raised = Math.max(s * 10, 1e-8);
      onRaise?.(s, raised);
      s = raised;
    }
  }
}

/** Damped inverses of a linear/conv layer's A (orderA×orderA) and G (orderG×orderG). */
export async function kronPreconditioner(
  backend: ComputeBackend,
  orderA: number,
  a: Float64Array,
  orderG: number,
  g: Float64Array,
  damping: DampingConfig,
  onRaise?: (factor: 'A' | 'G', from: number, to: number) => void,
  /** Residuals measured before (O(n²) probes are a diagnostic: callers sample them), or undefined to measure now. */
  residuals?: { a: number; g: number },
): Promise<Preconditioner & { kind: 'kron' }> {
  const root = Math.sqrt(effectiveDamping(damping));
  const pi = damping.piCorrection ? piCorrection(orderA, a, orderG, g) : 1;
  const ai = await dampedInverse(backend, orderA, a, pi * root, (f, t) => onRaise?.('A', f, t));
  const gi = await dampedInverse(backend, orderG, g, root / pi, (f, t) => onRaise?.('G', f, t));
  return {
    kind: 'kron',
    orderA,
    orderG,
    aInv: new Float32Array(ai.inv),
    gInv: new Float32Array(gi.inv),
    pi,
    shiftA: ai.shift,
    shiftG: gi.shift,
    residualA: residuals?.a ?? probeInverseResidual(orderA, ai.damped, ai.inv),
    residualG: residuals?.g ?? probeInverseResidual(orderG, gi.damped, gi.inv),
  };
}

/** Closed-form inverses of BN's 2×2 blocks F_c + λ·I. */
export function unitPreconditioner(channels: number, f: Float64Array | Float32Array, damping: DampingConfig): Preconditioner & { kind: 'unit' } {
  const lam = effectiveDamping(damping);
  const inv = new Float32Array(4 * channels);
  let shift = lam;
  for (let c = 0; c < channels; c++) {
    let s = lam;
    let a = 0;
    let b = 0;
    let d = 0;
    let det = 0;
    // A block that is not positive definite after damping gets more damping, like the big factors.
    for (let attempt = 0; attempt <= maxDampingRaises; attempt++) {
      a = f[4 * c] + s;
      b = f[4 * c + 1];
      d = f[4 * c + 3] + s;
      det = a * d - b * b;
      if (a > 0 && det > 0 && Number.isFinite(det)) break;
      s = Math.max(s * 10, 1e-8);
    }
    if (!(det > 0)) throw new NotPositiveDefiniteError(2, 2);
    shift = Math.max(shift, s);
    inv[4 * c] = d / det;
    inv[4 * c + 1] = -b / det;
    inv[4 * c + 2] = -b / det;
    inv[4 * c + 3] = a / det;
  }
  return { kind: 'unit', channels, inv, shift };
}

/**
 * The preconditioned gradient: G⁻¹·[dW | db]·A⁻¹ for kron (grad is orderG × orderA), or the
 * 2×2 block product per channel for unit (grad holds (dγ, dβ) pairs).
 */
export async function precondition(backend: ComputeBackend, p: Preconditioner, grad: Float32Array): Promise<Float32Array> {
  if (p.kind === 'unit') {
    const out = new Float32Array(2 * p.channels);
    for (let c = 0; c < p.channels; c++) {
      const x = grad[2 * c];
      const y = grad[2 * c + 1];
      out[2 * c] = p.inv[4 * c] * x + p.inv[4 * c + 1] * y;
      out[2 * c + 1] = p.inv[4 * c + 2] * x + p.inv[4 * c + 3] * y;
    }
    return out;
  }
  const { orderA, orderG } = p;
  if (grad.length !== orderA * orderG) {
    throw new RangeError(`gradient of ${grad.length} values does not match a ${orderG}x${orderA} preconditioner`);
  }
  const left = await backend.gemm(orderG, orderA, orderG, p.gInv, grad);
  return backend.gemm(orderG, orderA, orderA, left, p.aInv);
}
