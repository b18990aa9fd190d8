/**
 * Checks of values where they enter an actor: preconditioners received by the PS (and checked by
 * an owner before it publishes), version numbers, statistics received by an owner. Each returns
 * why a value is refused, or undefined.
 */
import type { Preconditioner } from '../../kfac/preconditioner.js';

/** How far ahead of the PS's step a preconditioner version (or its step) may be. */
export const VERSION_SLACK = 1024;

/**
 * Why a preconditioner version is refused (undefined: fine): versions grow by one per refresh,
 * at most once per step plus one per hand-over, so one far ahead of the PS's step is a lie (and
 * would make the owner's real versions look old).
 */
export function versionProblem(version: number, computedFromStep: number, psStep: number, epoch: number): string | undefined {
  const limit = psStep + VERSION_SLACK + epoch;
  if (!Number.isSafeInteger(version) || version > limit) return `version ${version} is far ahead of step ${psStep} (at most ${limit} accepted)`;
  if (!Number.isSafeInteger(computedFromStep) || computedFromStep > psStep + VERSION_SLACK)
    return `computed_from_step ${computedFromStep} is far ahead of step ${psStep}`;
  return undefined;
}

/** Largest |entry| of a symmetric matrix's diagonal, or a reason it is not positive. */
function diagonal(inv: Float32Array, n: number, batch: number, what: string): { max: number } | { problem: string } {
  let max = 0;
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < n; i++) {
      const d = inv[b * n * n + i * n + i];
      if (!(d > 0)) return { problem: `${what}: diagonal entry ${b > 0 ? `${b}/` : ''}${i} is ${d}, not positive` };
      if (d > max) max = d;
    }
  }
  return { max };
}

function nonFinite(a: Float32Array): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}

/**
 * Why a received preconditioner is refused (undefined: fine): every value finite, the damped
 * inverses' diagonals positive, and the inverses no larger than damping allows. An inverse of
 * M + s·I with M positive semi-definite has entries of at most 1/s, and the two shifts of a
 * Kronecker layer multiply to λ (π·√λ and √λ/π), so max diag(A⁻¹) · max diag(G⁻¹) ≤ 1/λ (a batch-norm
 * block: ≤ 1/λ); twice that is allowed for rounding. λ is the job's effective damping: owners may
 * raise it, which only shrinks the inverses.
 */
export function preconditionerProblem(p: Preconditioner, dampingEff: number): string | undefined {
  const bound = 2 / dampingEff;
  if (p.kind === 'unit') {
    const i = nonFinite(p.inv);
    if (i >= 0) return `batch-norm inverse value ${i} is ${p.inv[i]}`;
    const d = diagonal(p.inv, 2, p.channels, 'batch-norm inverse');
    if ('problem' in d) return d.problem;
    if (d.max > bound) return `batch-norm inverse diagonal up to ${d.max.toExponential(3)}, more than damping ${dampingEff} allows (${bound.toExponential(3)})`;
    return undefined;
  }
  if (!Number.isFinite(p.pi) || !(p.pi > 0)) return `pi is ${p.pi}`;
  for (const [name, inv, _n] of [
    ['A inverse', p.aInv, p.orderA],
    ['G inverse', p.gInv, p.orderG],
  ] as const) {
    const i = nonFinite(inv);
    if (i >= 0) return `${name} value ${i} is ${inv[i]}`;
  }
  const a = diagonal(p.aInv, p.orderA, 1, 'A inverse');
  if ('problem' in a) return a.problem;
  const g = diagonal(p.gInv, p.orderG, 1, 'G inverse');
  if ('problem' in g) return g.problem;
  if (a.max * g.max > bound)
    return `max diag(A⁻¹)·max diag(G⁻¹) = ${(a.max * g.max).toExponential(3)}, more than damping ${dampingEff} allows (${bound.toExponential(3)})`;
  return undefined;
}

/**
 * Why a received statistic (dense, `batch` symmetric matrices of order n: E[a·aᵀ], E[g·gᵀ] or a
 * batch-norm block) is refused: a value not finite, or a negative diagonal entry (a mean of outer
 * products has none).
 */
export function statisticProblem(values: Float32Array, n: number, batch = 1): string | undefined {
  const i = nonFinite(values);
  if (i >= 0) return `value ${i} is ${values[i]}`;
  for (let b = 0; b < batch; b++) {
    for (let k = 0; k < n; k++) {
      const d = values[b * n * n + k * n + k];
      if (d < 0) return `diagonal entry ${b > 0 ? `${b}/` : ''}${k} is ${d}, negative`;
    }
  }
  return undefined;
}
