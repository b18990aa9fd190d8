/** The transport tunables of a job, from its cluster config. */
import type { ClusterConfig } from '../../config/schema.js';
import type { TransportOptions } from '../../transport/channel-options.js';

export function transportOf(c: ClusterConfig): TransportOptions {
  return { chunkBytes: c.chunkBytes, keepaliveTimeMs: c.keepaliveMs, keepaliveTimeoutMs: c.keepaliveTimeoutMs };
}
