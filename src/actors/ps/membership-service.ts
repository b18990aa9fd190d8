/**
 * MembershipService as the PS serves it: Join, Leave and Heartbeat checked by the admission rules
 * and applied to the membership, and WatchMembership streams that get every new view.
 */
import { status, type ServerWritableStream } from '@grpc/grpc-js';
import {
  LifecycleState,
  Role,
  type MembershipServiceServer,
  type MembershipView,
  type WatchMembershipRequest,
  type WatchMembershipResponse,
} from '../../gen/spngd/v1/membership.js';
import type { TrainConfig } from '../../config/schema.js';
import type { TransportError } from '../../transport/errors.js';
import type { Logger } from '../../util/log.js';
import type { Admission } from './admission.js';
import type { Membership } from './membership.js';

export class MembershipService {
  private readonly watchers = new Set<ServerWritableStream<WatchMembershipRequest, WatchMembershipResponse>>();

  constructor(
    private readonly membership: Membership,
    private readonly admission: Admission,
    private readonly config: TrainConfig,
    private readonly logger: Logger,
  ) {}

  /** Sends a new view to every watcher. */
  publish(view: MembershipView): void {
    for (const w of this.watchers) w.write({ view });
  }

  /** Ends every watch stream (the PS stops). */
  endWatches(): void {
    for (const w of this.watchers) w.end();
  }

  implementation(): MembershipServiceServer {
    const c = this.config;
    const membership = this.membership;
    return {
      join: (call, cb) => {
        const m = call.request.member;
        if (!m || (m.role !== Role.ROLE_WORKER && m.role !== Role.ROLE_FACTOR_OWNER && m.role !== Role.ROLE_PS_SHARD)) {
          cb({ code: status.INVALID_ARGUMENT, details: 'join: member with role worker, factor owner or PS shard required' });
          return;
        }
        if (!knownLifecycle(m.state)) {
          cb({ code: status.INVALID_ARGUMENT, details: `join: unknown lifecycle state ${m.state}` });
          return;
        }
        // An id held by a member of another role (or the PS's own) is a mistake; a live one of the
        // same role is taken over only by that member itself (see Admission.admitJoin).
        const holder = m.id ? membership.get(m.id) : undefined;
        if (holder && holder.role !== m.role) {
          cb({ code: status.FAILED_PRECONDITION, details: `join: id "${m.id}" belongs to a member with role ${Role[holder.role] ?? holder.role}` });
          return;
        }
        let id: string;
        try {
          id = this.admission.admitJoin(call, m, holder);
        } catch (err) {
          cb((err as TransportError).toStatus());
          return;
        }
        const joined = membership.join({ ...m, id });
        const sessionSecret = this.admission.issue(joined.id, joined.role);
        this.logger.info(`${joined.id} joined from ${joined.address || 'an unknown address'}`);
        cb(null, {
          sessionSecret,
          view: { ...membership.view(), members: membership.list() },
          heartbeatIntervalMs: c.cluster.heartbeatMs,
          leaseMs: c.cluster.leaseMs,
          // Without the security section: file paths of this host mean nothing on the others.
          trainingConfigJson: JSON.stringify({ ...c, security: undefined }),
          memberId: joined.id,
        });
      },
      leave: (call, cb) => {
        const id = call.request.memberId;
        if (membership.get(id)) {
          try {
            this.admission.authorize(call, id, 'leave');
          } catch (err) {
            cb((err as TransportError).toStatus());
            return;
          }
        }
        membership.leave(id, call.request.reason || 'left');
        cb(null, { epoch: membership.epoch });
      },
      heartbeat: (call, cb) => {
        if (!knownLifecycle(call.request.state)) {
          cb({ code: status.INVALID_ARGUMENT, details: `heartbeat: unknown lifecycle state ${call.request.state}` });
          return;
        }
        if (membership.get(call.request.memberId)?.role === Role.ROLE_PARAMETER_SERVER) {
          cb({ code: status.FAILED_PRECONDITION, details: `heartbeat: "${call.request.memberId}" is the parameter server, which holds no lease` });
          return;
        }
        if (membership.get(call.request.memberId)) {
          try {
            this.admission.authorize(call, call.request.memberId, 'heartbeat');
          } catch (err) {
            cb((err as TransportError).toStatus());
            return;
          }
        }
        // An unknown id is told so (known: false), and the member joins again.
        const known = membership.heartbeat(call.request.memberId, call.request.state);
        cb(null, { epoch: membership.epoch, known });
      },
      watchMembership: (call) => {
        this.watchers.add(call);
        call.write({ view: membership.view() });
        const done = () => this.watchers.delete(call);
        call.on('cancelled', done);
        call.on('close', done);
        call.on('error', done);
      },
    };
  }
}

function knownLifecycle(state: LifecycleState): boolean {
  return Number.isInteger(state) && state >= LifecycleState.LIFECYCLE_STATE_UNSPECIFIED && state <= LifecycleState.LIFECYCLE_STATE_STOPPED;
}
