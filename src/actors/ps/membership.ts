/**
 * The coordinator's membership: who has joined, their leases, the epoch (bumped by every change)
 * and the layer assignment, recomputed whenever the set of owners changes.
 */
import { EventEmitter } from 'node:events';
import { LifecycleState, Role, type LayerAssignment, type LayerOwner, type Member, type MembershipView, type PsShard } from '../../gen/spngd/v1/membership.js';
import { assignLayers, type LayerCost } from './assignment.js';

export interface MembershipEvents {
  change: [view: MembershipView, reason: string];
}

export class Membership extends EventEmitter<MembershipEvents> {
  epoch = 1;
  /** The next training step to be started (the PS advances it): views record it as first_step. */
  nextStep = 0;
  private readonly members = new Map<string, Member>();
  private assignment: LayerOwner[];
  private counters = { worker: 0, owner: 0, shard: 0 };
  /** The parameter-server shards and their layers (the PS sets them at step boundaries). */
  psShards: PsShard[] = [];

  constructor(
    private readonly layers: LayerCost[],
    self: Member,
    readonly leaseMs: number,
  ) {
    super();
    this.members.set(self.id, self);
    this.assignment = assignLayers(layers, []);
  }

  /** Adds or replaces a member; a missing id is assigned ("worker-3", "owner-1"). */
  join(member: Member): Member {
    const m: Member = { ...member, joinedEpoch: this.epoch + 1, lastHeartbeatUnixMs: Date.now() };
    if (!m.id) {
      const kind = m.role === Role.ROLE_FACTOR_OWNER ? 'owner' : m.role === Role.ROLE_PS_SHARD ? 'shard' : 'worker';
      do m.id = `${kind}-${++this.counters[kind]}`;
      while (this.members.has(m.id));
    }
    const replaced = this.members.has(m.id);
    this.members.set(m.id, m);
    this.bump(`${replaced ? 'rejoined' : 'joined'}: ${m.id}`, m.role === Role.ROLE_FACTOR_OWNER);
    return m;
  }

  leave(id: string, reason: string): boolean {
    const m = this.members.get(id);
    if (!m || m.role === Role.ROLE_PARAMETER_SERVER) return false;
    this.members.delete(id);
    this.bump(`left: ${id} (${reason})`, m.role === Role.ROLE_FACTOR_OWNER);
    return true;
  }

  /**
   * Forgets every member but the PS in one epoch: each learns it at its next heartbeat and joins
   * again, as after a restart of the PS (owners then take their layers' state from the PS).
   */
  forgetAll(reason: string): void {
    const others = this.list().filter((m) => m.role !== Role.ROLE_PARAMETER_SERVER);
    if (others.length === 0) return;
    for (const m of others) this.members.delete(m.id);
    this.bump(
      `forgot ${others.map((m) => m.id).join(', ')} (${reason})`,
      others.some((m) => m.role === Role.ROLE_FACTOR_OWNER),
    );
  }

  /** Renews a lease; false when the member is unknown (it must join again). */
  heartbeat(id: string, state: LifecycleState): boolean {
    const m = this.members.get(id);
    if (!m) return false;
    m.lastHeartbeatUnixMs = Date.now();
    if (state !== LifecycleState.LIFECYCLE_STATE_UNSPECIFIED) m.state = state;
    return true;
  }

  /** Removes members whose lease ran out; returns their ids. */
  expire(now = Date.now()): string[] {
    const gone: string[] = [];
    for (const m of this.members.values()) {
      if (m.role !== Role.ROLE_PARAMETER_SERVER && now - m.lastHeartbeatUnixMs > this.leaseMs) gone.push(m.id);
    }
    for (const id of gone) this.leave(id, `no heartbeat for ${this.leaseMs} ms`);
    return gone;
  }

  get(id: string): Member | undefined {
    return this.members.get(id);
  }

  list(role?: Role): Member[] {
    return [...this.members.values()].filter((m) => role === undefined || m.role === role).sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  ownerOf(layer: string): string {
    return this.assignment.find((l) => l.layer === layer)?.ownerId ?? '';
  }

  layerAssignment(): LayerAssignment {
    return { epoch: this.epoch, layers: this.assignment.map((l) => ({ ...l })) };
  }

  view(): MembershipView {
    return {
      epoch: this.epoch,
      members: this.list(),
      assignment: this.layerAssignment(),
      firstStep: this.nextStep,
      psShards: this.psShards.map((s) => ({ ...s, layers: [...s.layers] })),
    };
  }

  private bump(reason: string, reassign: boolean): void {
    this.epoch++;
    if (reassign) {
      const owners = this.list(Role.ROLE_FACTOR_OWNER).map((o) => ({ id: o.id, capacity: o.capacity }));
      this.assignment = assignLayers(this.layers, owners, this.assignment);
    }
    this.emit('change', this.view(), reason);
  }
}
