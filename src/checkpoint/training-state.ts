/**
 * Everything a training run needs to continue exactly where it stopped: the step, parameters and
 * buffers, momentum velocities and the last learning rate, and each layer's curvature (running
 * statistics, schedules, versions). The single-process trainer and the PS both checkpoint this.
 */
import type { LayerCurvatureSnapshot } from '../kfac/layer-curvature.js';
import type { StatKind } from '../kfac/factors.js';
import type { ScheduleSnapshot } from '../kfac/stale.js';
import type { CheckpointContents } from './format.js';

export interface TrainingState {
  step: number;
  /** Parameters and buffers by name. */
  model: Record<string, Float32Array>;
  velocity: Map<string, Float32Array>;
  previousLr: number | undefined;
  curvature: LayerCurvatureSnapshot[];
  /** Run bookkeeping carried across a resume (e.g. training seconds so far). */
  extra: Record<string, unknown>;
}

interface Header {
  format: 1;
  step: number;
  previousLr: number | null;
  model: string[];
  velocity: string[];
  curvature: { spec: LayerCurvatureSnapshot['spec']; version: number; stats: { kind: StatKind; schedule: ScheduleSnapshot }[] }[];
  extra: Record<string, unknown>;
}

export function stateToCheckpoint(s: TrainingState): CheckpointContents<Header> {
  const tensors = new Map<string, Float32Array | Float64Array>();
  for (const [k, v] of Object.entries(s.model)) tensors.set(`model/${k}`, v);
  for (const [k, v] of s.velocity) tensors.set(`velocity/${k}`, v);
  for (const c of s.curvature) {
    for (const st of c.stats) {
      tensors.set(`curvature/${c.spec.name}/${st.kind}/running`, new Float64Array(st.running));
      tensors.set(`curvature/${c.spec.name}/${st.kind}/last`, new Float64Array(st.last));
    }
  }
  return {
    header: {
      format: 1,
      step: s.step,
      previousLr: s.previousLr ?? null,
      model: Object.keys(s.model),
      velocity: [...s.velocity.keys()],
      curvature: s.curvature.map((c) => ({ spec: c.spec, version: c.version, stats: c.stats.map((st) => ({ kind: st.kind, schedule: st.schedule })) })),
      extra: s.extra,
    },
    tensors,
  };
}

export function checkpointToState(c: CheckpointContents<Header>): TrainingState {
  const h = c.header;
  const get = (name: string) => {
    const t = c.tensors.get(name);
    if (!t) throw new Error(`checkpoint lacks tensor ${name}`);
    return t;
  };
  return {
    step: h.step,
    model: Object.fromEntries(h.model.map((k) => [k, new Float32Array(get(`model/${k}`))])),
    velocity: new Map(h.velocity.map((k) => [k, new Float32Array(get(`velocity/${k}`))])),
    previousLr: h.previousLr ?? undefined,
    curvature: h.curvature.map((cv) => ({
      spec: cv.spec,
      version: cv.version,
      stats: cv.stats.map((st) => ({
        kind: st.kind,
        schedule: st.schedule,
        running: Array.from(get(`curvature/${cv.spec.name}/${st.kind}/running`)),
        last: Array.from(get(`curvature/${cv.spec.name}/${st.kind}/last`)),
      })),
    })),
    extra: h.extra ?? {},
  };
}
