/** StateService (GetState, WatchMetrics) over an actor's state tracker and metric hub. */
import type { ServerWritableStream } from '@grpc/grpc-js';
import type { StateServiceServer, WatchMetricsRequest, WatchMetricsResponse } from '../../gen/spngd/v1/state.js';
import type { ActorStateTracker } from './actor-state.js';
import type { MetricHub } from './metric-hub.js';

export function stateService(state: ActorStateTracker, metrics: MetricHub): StateServiceServer {
  return {
    getState(_call, callback) {
      callback(null, { state: state.snapshot() });
    },
    watchMetrics(call: ServerWritableStream<WatchMetricsRequest, WatchMetricsResponse>) {
      const names = new Set(call.request.names);
      const wanted = (n: string) => names.size === 0 || names.has(n);
      if (call.request.includeHistory) {
        const past = metrics.recent().filter((e) => wanted(e.name));
        if (past.length > 0) call.write({ events: past });
      }
      const unsubscribe = metrics.subscribe((events) => {
        const ev = events.filter((e) => wanted(e.name));
        // A watcher that does not keep up is dropped rather than buffered without bound.
        if (ev.length > 0 && !call.write({ events: ev })) {
          if (call.writableLength > 1024) {
            unsubscribe();
            call.end();
          }
        }
      });
      const stop = () => unsubscribe();
      call.on('cancelled', stop);
      call.on('close', stop);
      call.on('error', stop);
    },
  };
}
