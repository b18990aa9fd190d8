/**
 * What the PS lets in: which caller may speak for which member (session secrets handed out at
 * Join, and the identity of the peer certificate under mutual TLS), and which preconditioner
 * values it accepts. Every refusal is counted in the actor state and logged with the caller.
 */
import { status } from '@grpc/grpc-js';
import type { Role, Member } from '../../gen/spngd/v1/membership.js';
import { TransportError } from '../../transport/errors.js';
import type { Logger } from '../../util/log.js';
import type { ActorStateTracker } from '../common/actor-state.js';
import { callIdentity, describeCaller, newSessionSecret, roleName, sameSecret, type CallIdentity } from '../common/identity.js';

type Call = Parameters<typeof callIdentity>[0];

/** A refused message: the gRPC status to answer with and the kind counted in the state. */
export class Refusal extends TransportError {
  constructor(
    code: status,
    readonly refusal: string,
    message: string,
  ) {
    super(code, 'bad_argument', message);
  }
}

export class Admission {
  private readonly sessions = new Map<string, { secret: string; role: Role }>();

  constructor(
    private readonly state: ActorStateTracker,
    private readonly logger: Logger,
  ) {}

  /** Counts and logs a refusal; returns it to be thrown or answered. */
  refuse(who: CallIdentity | string, kind: string, code: status, why: string, claimed?: string): Refusal {
    const sender = typeof who === 'string' ? who : describeCaller(who, claimed);
    this.logger.warn(this.state.refuse(kind, sender, why));
    return new Refusal(code, kind, why);
  }

  /** The certificate, if it names an identity, must name this role and id. */
  private checkCert(who: CallIdentity, role: Role, id: string, what: string): void {
    const c = who.cert;
    if (!c) return;
    if (c.role !== role || (c.id !== '*' && id !== '' && c.id !== id)) {
      throw this.refuse(
        who,
        'certificate_mismatch',
        status.PERMISSION_DENIED,
        `${what}: the peer certificate names ${c.uri}, not ${roleName(role)} "${id.slice(0, 64)}"`,
        id,
      );
    }
  }

  /**
   * Checks a Join of `member` against the member `alive` now holding its id (if any): a live id is
   * taken over only by a caller that proves to be that member (its current session secret, or a
   * certificate naming exactly that id); anyone else gets ALREADY_EXISTS. Returns the id to use
   * (a certificate's id when the request left it empty).
   */
  admitJoin(call: Call, member: Member, alive: Member | undefined): string {
    const who = callIdentity(call);
    this.checkCert(who, member.role, member.id, 'join');
    const id = member.id || (who.cert && who.cert.id !== '*' ? who.cert.id : '');
    if (alive) {
      const held = this.sessions.get(alive.id);
      const proven =
        (held && who.session !== undefined && sameSecret(who.session, held.secret)) ||
        (who.cert !== undefined && who.cert.id === alive.id && who.cert.role === alive.role);
      if (!proven) {
        throw this.refuse(
          who,
          'id_in_use',
          status.ALREADY_EXISTS,
          `join: "${alive.id.slice(0, 64)}" is a live member (it heartbeats); a restarted actor may join again once its lease ran out`,
          alive.id,
        );
      }
    }
    return id;
  }

  /** A new session for member `id` (replacing any earlier one); returns its secret. */
  issue(id: string, role: Role): string {
    const secret = newSessionSecret();
    this.sessions.set(id, { secret, role });
    return secret;
  }

  /** Forgets the sessions of members not in `ids` (they left or expired). */
  retain(ids: Set<string>): void {
    for (const id of this.sessions.keys()) if (!ids.has(id)) this.sessions.delete(id);
  }

  /**
   * A call that speaks for member `id` (`what`: "heartbeat", "leave", "train", "publish"): it must
   * carry the member's current session secret (UNAUTHENTICATED without one, PERMISSION_DENIED with
   * another), and a certificate that names an identity must name this member. Returns the secret.
   */
  authorize(call: Call, id: string, what: string): string {
    const who = callIdentity(call);
    const held = this.sessions.get(id);
    if (held) this.checkCert(who, held.role, id, what);
    if (who.session === undefined)
      throw this.refuse(
        who,
        'no_session',
        status.UNAUTHENTICATED,
        `${what} for "${id.slice(0, 64)}" without its session secret (metadata "spngd-session", from Join)`,
        id,
      );
    if (!held || !sameSecret(who.session, held.secret))
      throw this.refuse(
        who,
        'wrong_session',
        status.PERMISSION_DENIED,
        `${what} for "${id.slice(0, 64)}" with a session secret that is not this member's current one`,
        id,
      );
    return held.secret;
  }

  /** Whether `secret` is still member `id`'s current session (a stream opened before a rejoin is not). */
  current(id: string, secret: string): boolean {
    const held = this.sessions.get(id);
    return held !== undefined && sameSecret(held.secret, secret);
  }
}
