/**
 * Preconditioners on the wire: a Kronecker layer travels as its two damped inverses (A⁻¹, G⁻¹) and
 * a BN layer as C 2×2 inverses, all as upper triangles; a commit carries π, damping and residual.
 */
import { PreconditionerFactor, type PreconditionerChunk, type PreconditionerCommit } from '../../gen/spngd/v1/parameter_server.js';
import type { ByteBudgetWriter } from '../../transport/flow.js';
import { sendSymmetric } from './tensor-io.js';
import type { StatKind } from '../../kfac/factors.js';
import type { Preconditioner } from '../../kfac/preconditioner.js';
import { unpackUpperTriangle } from '../../transport/upper-triangle.js';

export interface WireFactor {
  factor: PreconditionerFactor;
  /** Full symmetric matrices, `batch` of order n. */
  values: Float32Array;
  n: number;
  batch?: number;
}

/** The statistic whose damped inverse a wire factor carries (its shape is inverseShape of that kind). */
export const factorToKind = new Map<PreconditionerFactor, StatKind>([
  [PreconditionerFactor.PRECONDITIONER_FACTOR_A_INVERSE, 'A'],
  [PreconditionerFactor.PRECONDITIONER_FACTOR_G_INVERSE, 'G'],
  [PreconditionerFactor.PRECONDITIONER_FACTOR_BN_INVERSE, 'F'],
]);

/** The tensors that carry a preconditioner. */
export function preconditionerFactors(p: Preconditioner): WireFactor[] {
  if (p.kind === 'unit') return [{ factor: PreconditionerFactor.PRECONDITIONER_FACTOR_BN_INVERSE, values: p.inv, n: 2, batch: p.channels }];
  return [
    { factor: PreconditionerFactor.PRECONDITIONER_FACTOR_A_INVERSE, values: p.aInv, n: p.orderA },
    { factor: PreconditionerFactor.PRECONDITIONER_FACTOR_G_INVERSE, values: p.gInv, n: p.orderG },
  ];
}

export function residualOf(p: Preconditioner): number {
  return p.kind === 'kron' ? Math.max(p.residualA, p.residualG) : 0;
}

/**
 * Rebuilds a preconditioner from received upper triangles (factor → packed values and shape).
 * Throws a RangeError naming what is missing or inconsistent.
 */
export function decodePreconditioner(
  layer: string,
  factors: Map<PreconditionerFactor, { values: Float32Array; shape: number[] }>,
  commit: PreconditionerCommit,
): Preconditioner {
  const bn = factors.get(PreconditionerFactor.PRECONDITIONER_FACTOR_BN_INVERSE);
  if (bn) {
    if (factors.size !== 1 || bn.shape.length !== 3 || bn.shape[1] !== 2 || bn.shape[2] !== 2) {
      throw new RangeError(`layer ${layer}: a batch-norm preconditioner is one [C,2,2] tensor`);
    }
    const channels = bn.shape[0];
    return { kind: 'unit', channels, inv: unpackUpperTriangle(bn.values, 2, channels), shift: commit.damping };
  }
  const a = factors.get(PreconditionerFactor.PRECONDITIONER_FACTOR_A_INVERSE);
  const g = factors.get(PreconditionerFactor.PRECONDITIONER_FACTOR_G_INVERSE);
  if (!a || !g || factors.size !== 2) throw new RangeError(`layer ${layer}: a Kronecker preconditioner needs A and G inverses`);
  if (a.shape.length !== 2 || g.shape.length !== 2) throw new RangeError(`layer ${layer}: inverses must be [n,n]`);
  const orderA = a.shape[0];
  const orderG = g.shape[0];
  return {
    kind: 'kron',
    orderA,
    orderG,
    aInv: unpackUpperTriangle(a.values, orderA, 1),
    gInv: unpackUpperTriangle(g.values, orderG, 1),
    pi: commit.pi,
    shiftA: commit.pi * Math.sqrt(commit.damping),
    shiftG: Math.sqrt(commit.damping) / (commit.pi || 1),
    residualA: commit.residual,
    residualG: commit.residual,
  };
}

/** One preconditioner as it goes on a stream (an owner publishing, the coordinator relaying it to a PS shard). */
export interface OutgoingPreconditioner {
  layer: string;
  preconditioner: Preconditioner;
  version: number;
  computedFromStep: number;
  /** Membership epoch the sender settled. */
  epoch: number;
  /** The damping the owner inverted with (PreconditionerCommit.damping). */
  damping: number;
}

/** Writes a preconditioner's inverses as upper-triangle chunks, then its commit. */
export async function sendPreconditioner<T>(
  out: ByteBudgetWriter<T>,
  wrap: { chunk: (c: PreconditionerChunk) => T; commit: (c: PreconditionerCommit) => T },
  p: OutgoingPreconditioner,
  chunkBytes: number,
): Promise<void> {
  const { layer, version, computedFromStep, preconditioner: pre } = p;
  for (const f of preconditionerFactors(pre)) {
    await sendSymmetric(
      out,
      (tensor) => wrap.chunk({ layer, factor: f.factor, version, computedFromStep, tensor }),
      layer,
      f.values,
      f.n,
      version,
      chunkBytes,
      f.batch,
    );
  }
  const commit: PreconditionerCommit = {
    layer,
    version,
    computedFromStep,
    epoch: p.epoch,
    factors: pre.kind === 'kron' ? 2 : 1,
    damping: p.damping,
    pi: pre.kind === 'kron' ? pre.pi : 1,
    residual: residualOf(pre),
  };
  await out.write(wrap.commit(commit), 64);
}
