/**
 * The PS's preconditioner store without a network: owners' watermarks arrive on fake publish
 * streams, and waitPast(s) returns as soon as every current owner is past s, waits out a late
 * one, and counts only watermarks of the current membership epoch.
 */
import { EventEmitter } from 'node:events';
import { Metadata, type ServerDuplexStream } from '@grpc/grpc-js';
import test from 'ava';
import { ActorStateTracker } from '../src/actors/common/actor-state.js';
import { SESSION_METADATA } from '../src/actors/common/identity.js';
import { Admission } from '../src/actors/ps/admission.js';
import { layerCost } from '../src/actors/ps/assignment.js';
import { Membership } from '../src/actors/ps/membership.js';
import { PreconditionerStore } from '../src/actors/ps/preconditioner-store.js';
import { LifecycleState, Role, type Member } from '../src/gen/spngd/v1/membership.js';
import type { PublishPreconditionersRequest, PublishPreconditionersResponse } from '../src/gen/spngd/v1/parameter_server.js';
import { buildModel } from '../src/nn/models.js';
import { silentLogger } from '../src/util/log.js';
import { capturingLogger } from './helpers/cluster.js';

function member(id: string, role: Role): Member {
  return { id, role, address: '', state: LifecycleState.LIFECYCLE_STATE_READY, joinedEpoch: 0, lastHeartbeatUnixMs: Date.now(), capacity: 1 };
}

/** A PS's membership with `owners` joined, a store over it, and a way to send watermarks as each owner. */
function setup(owners: string[], waitMs: number) {
  const layers = buildModel('mlp', 1).kfacLayers();
  const membership = new Membership(layers.map(layerCost), member('ps-0', Role.ROLE_PARAMETER_SERVER), 60_000);
  const state = new ActorStateTracker(Role.ROLE_PARAMETER_SERVER, 'ps-0');
  const admission = new Admission(state, silentLogger());
  const { logger, messages } = capturingLogger('warn');
  const store = new PreconditionerStore({ layers, membership, admission, state, logger, damping: 1e-3, waitMs, step: () => 0 });
  membership.on('change', (view) => store.onMembershipChange(view));
  const streams = new Map<string, EventEmitter>();
  const join = (id: string) => {
    membership.join(member(id, Role.ROLE_FACTOR_OWNER));
    const call = Object.assign(new EventEmitter(), {
      metadata: new Metadata(),
      getPeer: () => `test:${id}`,
      write: () => true,
      end: () => undefined,
    });
    call.metadata.set(SESSION_METADATA, admission.issue(id, Role.ROLE_FACTOR_OWNER));
    store.onPublishStream(call as unknown as ServerDuplexStream<PublishPreconditionersRequest, PublishPreconditionersResponse>);
    call.emit('data', { kind: { $case: 'hello', value: { ownerId: id } } });
    streams.set(id, call);
  };
  for (const id of owners) join(id);
  const watermark = (id: string, nextRefreshStep: number, epoch = membership.epoch) =>
    streams.get(id)!.emit('data', { kind: { $case: 'watermark', value: { nextRefreshStep, epoch, intervals: { 'fc1/A': 3 } } } });
  /** Milliseconds waitPast(s) took. */
  const timedWait = async (s: number) => {
    const t0 = performance.now();
    // The store's own timers do not keep a process alive (a PS's server does).
    const alive = setInterval(() => undefined, 1000);
    await store.waitPast(s);
    clearInterval(alive);
    return performance.now() - t0;
  };
  return { store, membership, join, watermark, timedWait, messages };
}

test.serial('waitPast returns at once when every owner is past the step, and waits for one that is not', async (t) => {
  const { store, watermark, timedWait, messages } = setup(['owner-1', 'owner-2'], 5000);
  watermark('owner-1', 10);
  watermark('owner-2', 4);
  t.true((await timedWait(3)) < 100, 'both past step 3');
  t.deepEqual(store.intervals(), { 'fc1/A': 3 });
  setTimeout(() => watermark('owner-2', 5), 150);
  const waited = await timedWait(4);
  t.true(waited >= 100 && waited < 2000, `waited ${waited} ms for owner-2's next watermark`);
  t.deepEqual(messages, [], 'no warning: the owner caught up in time');
});

test.serial('waitPast gives up after waitMs, saying which owners are behind', async (t) => {
  const { watermark, timedWait, messages } = setup(['owner-1', 'owner-2'], 300);
  watermark('owner-1', 10);
  watermark('owner-2', 2);
  const waited = await timedWait(5);
  t.true(waited >= 250, `waited ${waited} ms`);
  t.deepEqual(messages, ['step 5: owners owner-2 have not published fresh preconditioners; using the last ones']);
});

test.serial('a watermark of an earlier membership epoch does not count; one sent after the change does', async (t) => {
  const { membership, join, watermark, timedWait, messages } = setup(['owner-1'], 300);
  watermark('owner-1', 10);
  t.true((await timedWait(5)) < 100);
  const before = membership.epoch;
  join('owner-2'); // a new epoch: owner-1 has not settled the new assignment yet
  watermark('owner-2', 10);
  watermark('owner-1', 10, before);
  t.true((await timedWait(5)) >= 250, 'owner-1 is behind until it sends a watermark of the new epoch');
  t.is(messages.length, 1);
  watermark('owner-1', 10);
  t.true((await timedWait(5)) < 100);
});

test.serial('an owner that left is not waited for', async (t) => {
  const { membership, watermark, timedWait } = setup(['owner-1', 'owner-2'], 5000);
  watermark('owner-1', 1);
  watermark('owner-2', 9);
  setTimeout(() => {
    membership.leave('owner-1', 'test');
    watermark('owner-2', 9); // of the new epoch
  }, 100);
  const waited = await timedWait(5);
  t.true(waited < 2000, `waited ${waited} ms`);
});
