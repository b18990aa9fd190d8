/**
 * A worker's or owner's side of membership: join the coordinator (the PS), keep the lease alive
 * with heartbeats (joining again if the PS forgot us, e.g. after it restarted), follow the view
 * through WatchMembership, and leave.
 */
import { type Metadata, status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import {
  type LifecycleState,
  MembershipServiceClient,
  type JoinResponse,
  type Member,
  type MembershipView,
  type Role,
  type WatchMembershipResponse,
} from '../../gen/spngd/v1/membership.js';
import type { TransportOptions } from '../../transport/channel-options.js';
import type { Logger } from '../../util/log.js';
import { INSECURE, type ActorCredentials } from './credentials.js';
import { sleep } from './deferred.js';
import { withSession } from './identity.js';
import { Reconnector } from './reconnect.js';

export class CoordinatorUnreachableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CoordinatorUnreachableError';
  }
}

export interface JoinedMember {
  id: string;
  view: MembershipView;
  /** The job's training config as JSON (parsed by the caller). */
  configJson: string;
  heartbeatMs: number;
  leaseMs: number;
}

export class MemberClient {
  readonly client: MembershipServiceClient;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private watchCall: ClientReadableStream<WatchMembershipResponse> | undefined;
  private stopped = false;
  id = '';
  /** The session secret of the last Join: sent with every later call to the PS. */
  private session = '';

  constructor(
    readonly psAddress: string,
    private readonly logger: Logger,
    transport: TransportOptions = {},
    security: ActorCredentials = INSECURE,
  ) {
    this.client = new MembershipServiceClient(psAddress, security.channelCredentials(), security.clientOptions(transport));
  }

  /** Joins, retrying for up to `waitMs` while the PS is not reachable yet. */
  async join(member: Omit<Member, 'joinedEpoch' | 'lastHeartbeatUnixMs'>, waitMs = 15000): Promise<JoinedMember> {
    const deadline = Date.now() + waitMs;
    let waitingForLease = false;
    for (;;) {
      try {
        // The current secret proves that a join again under our id is us (e.g. after a lost answer).
        const res = await new Promise<JoinResponse>((resolve, reject) =>
          this.client.join({ member: { ...member, joinedEpoch: 0, lastHeartbeatUnixMs: 0 } }, this.metadata(), { deadline: Date.now() + 5000 }, (err, r) =>
            err ? reject(err) : resolve(r),
          ),
        );
        this.id = res.memberId;
        this.session = res.sessionSecret;
        return { id: this.id, view: res.view!, configJson: res.trainingConfigJson, heartbeatMs: res.heartbeatIntervalMs, leaseMs: res.leaseMs };
      } catch (err) {
        const e = err as ServiceError;
        if (e.code === status.UNAUTHENTICATED)
          throw new CoordinatorUnreachableError(`parameter server ${this.psAddress} refused this process: ${e.details} (check --token-file)`);
        const why = (e.details || e.message).replace(/\s*\n\s*/g, ' ').trim();
        // Our id is still held by our previous incarnation (a restart within its lease): wait for the lease to run out.
        if (e.code === status.ALREADY_EXISTS) {
          if (Date.now() > deadline) throw new CoordinatorUnreachableError(`parameter server ${this.psAddress} refused the join: ${why}`);
          if (!waitingForLease) this.logger.warn(`${why}; trying again until it expires`);
          waitingForLease = true;
          await sleep(250);
          continue;
        }
        if (e.code !== status.UNAVAILABLE && e.code !== status.DEADLINE_EXCEEDED) throw err;
        if (Date.now() > deadline)
          throw new CoordinatorUnreachableError(
            `parameter server ${this.psAddress} is unreachable (${why})${/certificate|ssl|tls/i.test(why) ? '; check --tls-ca/--tls-cert/--tls-key on both sides' : ''}`,
          );
        await sleep(250);
      }
    }
  }

  /** Heartbeats every `ms`; `rejoin` runs when the PS no longer knows us. */
  startHeartbeats(ms: number, state: () => { lifecycle: LifecycleState; step: number; epoch: number }, rejoin: () => Promise<void>): void {
    const beat = () => {
      if (this.stopped) return;
      const s = state();
      this.client.heartbeat(
        { memberId: this.id, epoch: s.epoch, state: s.lifecycle, step: s.step },
        this.metadata(),
        { deadline: Date.now() + Math.max(ms, 1000) },
        (err, res) => {
          if (this.stopped) return;
          if (!err && res && !res.known) {
            this.logger.warn('the parameter server no longer knows this member; joining again');
            rejoin().catch((e) => this.logger.error(`rejoin failed: ${(e as Error).message}`));
          }
          this.heartbeatTimer = setTimeout(beat, ms);
        },
      );
    };
    this.heartbeatTimer = setTimeout(beat, ms);
  }

  /** Follows the membership view; reconnects the watch (with backoff) when it breaks. */
  watch(onView: (view: MembershipView) => void): void {
    const reconnect = new Reconnector(() => open());
    const open = () => {
      if (this.stopped) return;
      const call = this.client.watchMembership({ memberId: this.id });
      this.watchCall = call;
      call.on('data', (r: WatchMembershipResponse) => {
        reconnect.succeeded();
        if (r.view) onView(r.view);
      });
      call.on('error', () => undefined);
      call.on('close', () => {
        if (!this.stopped) reconnect.schedule();
      });
    };
    open();
  }

  /** Leaves the job: heartbeats stop first, so that the PS forgetting us does not trigger a rejoin. */
  async leave(reason: string): Promise<void> {
    this.stopped = true;
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    await new Promise<void>((resolve) => this.client.leave({ memberId: this.id, reason }, this.metadata(), { deadline: Date.now() + 2000 }, () => resolve()));
  }

  /** Metadata for a call to the PS: the session secret (and `base`'s entries and options). */
  metadata(base?: Metadata): Metadata {
    return withSession(this.session, base);
  }

  close(): void {
    this.stopped = true;
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.watchCall?.cancel();
    this.client.close();
  }
}

export type { Role };
