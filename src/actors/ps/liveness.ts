/**
 * Leases measured from the PS's own liveness. The lease timer should tick every `intervalMs`; a
 * tick that comes much later means the PS itself stalled (SIGSTOP, swapping, a blocked event
 * loop), and the heartbeats its members sent meanwhile are still unread: timers run before socket
 * reads, so expiring leases at once would drop every member for the PS's own stall. Instead, after
 * a gap of more than half a lease (and more than two ticks), leases are not checked for one lease:
 * every member gets that long to heartbeat again, and one that does not is dropped after it.
 */
export class LeaseClock {
  private last: number;
  /** Leases are not checked before this time (ms, the clock of `now`). */
  graceUntil = 0;

  constructor(
    private readonly leaseMs: number,
    private readonly intervalMs: number,
    private readonly onStall: (gapMs: number, graceMs: number) => void,
    now = performance.now(),
  ) {
    this.last = now;
  }

  /** Called by the lease timer; returns whether leases may be checked now. */
  tick(now = performance.now()): boolean {
    const gap = now - this.last;
    this.last = now;
    if (gap > Math.max(this.leaseMs / 2, 2 * this.intervalMs)) {
      this.graceUntil = now + this.leaseMs;
      this.onStall(gap, this.leaseMs);
    }
    return now >= this.graceUntil;
  }
}
