/**
 * The coordinator's side of the PS shards' ShardSession streams: one link per shard, the orders
 * of a step (ShardStep, the re-inverted preconditioners, ShardUpdate), moving layers' state to a
 * shard (ShardAssign) and back (ShardShare), and the wait for each answer. A link whose stream
 * ends, or whose shard is no longer a member, fails every wait on it with ShardLostError.
 */
import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import { Role } from '../../gen/spngd/v1/membership.js';
import type {
  ShardAssign,
  ShardGathered,
  ShardSessionRequest,
  ShardSessionResponse,
  ShardStep,
  ShardUpdate,
  ShardUpdated,
} from '../../gen/spngd/v1/parameter_server.js';
import type { Sequential } from '../../nn/sequential.js';
import { TransportError } from '../../transport/errors.js';
import { ByteBudgetWriter } from '../../transport/flow.js';
import type { Logger } from '../../util/log.js';
import { deferred, type Deferred } from '../common/deferred.js';
import { sendPreconditioner, type OutgoingPreconditioner } from '../common/preconditioner-wire.js';
import { acceptSession } from '../common/server-session.js';
import type { Admission } from './admission.js';
import type { Membership } from './membership.js';
import { sendState, ShardStateReceiver, type ShardState } from './shard-state.js';

/** A shard went away (its stream ended or its lease ran out) while the coordinator needed it. */
export class ShardLostError extends Error {
  constructor(
    readonly shardId: string,
    why: string,
  ) {
    super(`PS shard ${shardId} lost: ${why}`);
  }
}

type Report = NonNullable<ShardSessionRequest['kind']>;
type Awaited<K extends Report['$case']> = Extract<Report, { $case: K }>['value'];

export interface ShardLink {
  readonly id: string;
  readonly writer: ByteBudgetWriter<ShardSessionResponse>;
  closed: boolean;
  /** Answers awaited, by kind and step. */
  readonly waits: Map<string, Deferred<unknown>>;
  /** The state being received for a ShardShare. */
  receiver: ShardStateReceiver | undefined;
  /** Layer → version of the preconditioner last relayed to this shard. */
  readonly relayed: Map<string, number>;
}

export interface ShardLinksOptions {
  model: Sequential;
  membership: Membership;
  admission: Admission;
  logger: Logger;
  chunkBytes: number;
  /** A shard opened its session (the PS plans the layers again at the next step). */
  onArrival(): void;
}

export class ShardLinks {
  private readonly links = new Map<string, ShardLink>();

  constructor(private readonly opts: ShardLinksOptions) {}

  /** The shards with an open session, ordered by id. */
  live(): ShardLink[] {
    return [...this.links.values()].filter((l) => !l.closed).sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  get(id: string): ShardLink | undefined {
    const l = this.links.get(id);
    return l && !l.closed ? l : undefined;
  }

  /** Hands layers and their state to a shard; resolves once it has them all. */
  async assign(link: ShardLink, order: Omit<ShardAssign, 'stateTensors'>, state: ShardState): Promise<void> {
    link.relayed.clear();
    const answer = this.expect(link, 'assigned', order.step);
    const stateTensors = state.values.size + state.momentum.size;
    await this.send(link, { kind: { $case: 'assign', value: { ...order, stateTensors } } });
    const sent = await sendState(
      link.writer,
      (value) => ({ kind: { $case: 'tensor' as const, value } }),
      this.opts.model,
      state,
      order.step,
      this.opts.chunkBytes,
    ).catch((err: Error) => this.lose(link, err.message));
    if (sent !== undefined && sent !== stateTensors) throw new Error(`assign to ${link.id}: sent ${sent} of ${stateTensors} tensors`);
    await answer;
  }

  /** Orders step s; resolves with the workers whose gradients reached the shard. */
  async step(link: ShardLink, order: ShardStep): Promise<ShardGathered> {
    const answer = this.expect(link, 'gathered', order.step);
    await this.send(link, { kind: { $case: 'step', value: order } });
    return answer;
  }

  /** Tells a shard to stop waiting for these workers' gradients of step s (not acknowledged). */
  release(link: ShardLink, s: number, workers: string[]): void {
    void this.send(link, { kind: { $case: 'release', value: { step: s, workers } } });
  }

  /** Relays the preconditioners of the shard's layers that changed since last sent, then orders the update. */
  async update(link: ShardLink, fresh: OutgoingPreconditioner[], order: ShardUpdate): Promise<ShardUpdated> {
    const answer = this.expect(link, 'updated', order.step);
    try {
      for (const p of fresh) {
        if (link.relayed.get(p.layer) === p.version) continue;
        await sendPreconditioner(
          link.writer,
          {
            chunk: (value) => ({ kind: { $case: 'preconditioner' as const, value } }),
            commit: (value) => ({ kind: { $case: 'preconditionerCommit' as const, value } }),
          },
          p,
          this.opts.chunkBytes,
        );
        link.relayed.set(p.layer, p.version);
      }
    } catch (err) {
      this.lose(link, (err as Error).message);
    }
    await this.send(link, { kind: { $case: 'update', value: order } });
    return answer;
  }

  /** The state (values and momentum) of the shard's layers at step s. */
  async share(link: ShardLink, s: number, holds: (name: string) => boolean): Promise<ShardState> {
    link.receiver = new ShardStateReceiver(this.opts.model, s, holds);
    const answer = this.expect(link, 'shared', s);
    await this.send(link, { kind: { $case: 'share', value: { step: s } } });
    const done = await answer;
    const receiver = link.receiver;
    link.receiver = undefined;
    receiver.assertComplete(done.stateTensors);
    return receiver.state;
  }

  /** Tells every shard that training is over. */
  async drain(reason: string): Promise<void> {
    await Promise.all(
      this.live().map(async (l) => {
        try {
          await l.writer.write({ kind: { $case: 'drain', value: { reason, epoch: 0 } } }, 64);
          // Its session ends now by design, not as a loss.
          l.closed = true;
          await l.writer.end();
        } catch {
          /* already gone */
        }
      }),
    );
  }

  /** Shards that are no longer members (lease expired) are lost. */
  dropNonMembers(): void {
    for (const l of this.links.values()) if (!this.opts.membership.get(l.id)) this.lose(l, 'no longer a member');
  }

  onShardSession(call: ServerDuplexStream<ShardSessionRequest, ShardSessionResponse>): void {
    acceptSession(call, {
      rpc: 'ShardSession',
      what: 'shard session',
      logger: this.opts.logger,
      open: (hello) => this.open(call, hello.shardId),
      label: (link) => link.id,
      onMessage: (link, m) => {
        if (m.$case === 'tensor') {
          if (!link.receiver) throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', 'shard state without ShardShare');
          link.receiver.push(m.value);
          return;
        }
        const step = m.$case === 'assigned' || m.$case === 'gathered' || m.$case === 'updated' || m.$case === 'shared' ? m.value.step : -1;
        const wait = link.waits.get(`${m.$case}@${step}`);
        if (!wait) throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `${m.$case} of step ${step}, which was not asked for`);
        link.waits.delete(`${m.$case}@${step}`);
        wait.resolve(m.value);
      },
      onRefused: (link, err) => link && this.lose(link, (err as Error).message),
      onGone: (link) => link && this.lose(link, 'stream closed'),
    });
  }

  private open(call: ServerDuplexStream<ShardSessionRequest, ShardSessionResponse>, id: string): ShardLink {
    const member = this.opts.membership.get(id);
    if (!member)
      throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `shard "${id.slice(0, 64)}" has not joined (call MembershipService.Join first)`);
    if (member.role !== Role.ROLE_PS_SHARD)
      throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `"${id}" is a member with role ${Role[member.role] ?? member.role}, not a PS shard`);
    this.opts.admission.authorize(call, id, 'shard session');
    const old = this.links.get(id);
    if (old) this.lose(old, 'replaced by a new session');
    const link: ShardLink = { id, writer: new ByteBudgetWriter(call), closed: false, waits: new Map(), receiver: undefined, relayed: new Map() };
    this.links.set(id, link);
    this.opts.logger.info(`PS shard ${id} is in session`);
    this.opts.onArrival();
    return link;
  }

  private expect<K extends 'assigned' | 'gathered' | 'updated' | 'shared'>(link: ShardLink, kind: K, step: number): Promise<Awaited<K>> {
    if (link.closed) return Promise.reject(new ShardLostError(link.id, 'its session is over'));
    const d = deferred<unknown>();
    // Lost before the caller awaits it (while it still sends the order): not an unhandled rejection.
    d.promise.catch(() => undefined);
    link.waits.get(`${kind}@${step}`)?.reject(new ShardLostError(link.id, `${kind} of step ${step} asked for again`));
    link.waits.set(`${kind}@${step}`, d);
    return d.promise as Promise<Awaited<K>>;
  }

  private async send(link: ShardLink, order: ShardSessionResponse): Promise<void> {
    try {
      await link.writer.write(order, 64);
    } catch (err) {
      this.lose(link, (err as Error).message);
    }
  }

  private lose(link: ShardLink, why: string): void {
    if (link.closed) return;
    link.closed = true;
    if (this.links.get(link.id) === link) this.links.delete(link.id);
    for (const w of link.waits.values()) w.reject(new ShardLostError(link.id, why));
    link.waits.clear();
    this.opts.logger.warn(`PS shard ${link.id} lost: ${why}`);
  }
}
