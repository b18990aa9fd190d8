/** Seed of one step's 1mc labels: the same in every process layout (worker or single process). */
export function mcSeed(seed: number, step: number): number {
  return (Math.imul(seed + 1, 1000003) + Math.imul(step + 1, 7919)) >>> 0;
}
