/**
 * Recent metric events of one actor and the live subscribers of StateService.WatchMetrics. A
 * bounded ring buffer, so a long run never grows memory; slow subscribers are dropped, not waited for.
 */
import type { MetricEvent } from '../../gen/spngd/v1/state.js';

export type MetricListener = (events: MetricEvent[]) => void;

export class MetricHub {
  private readonly history: MetricEvent[] = [];
  private readonly listeners = new Set<MetricListener>();

  constructor(
    private readonly sourceId: () => string,
    private readonly capacity = 4096,
  ) {}

  emit(name: string, value: number, step: number, epoch: number, labels: Record<string, string> = {}): void {
    const e: MetricEvent = { name, value, step, epoch, timeUnixMs: Date.now(), sourceId: this.sourceId(), labels };
    this.history.push(e);
    if (this.history.length > this.capacity) this.history.splice(0, this.history.length - this.capacity);
    for (const l of this.listeners) l([e]);
  }

  recent(): MetricEvent[] {
    return [...this.history];
  }

  subscribe(l: MetricListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
}
