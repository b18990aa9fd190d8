/**
 * The coordinator's membership (src/actors/ps/membership.ts): joining and leaving, lease renewal and
 * expiry, the epoch bumped by every change, and the layer assignment recomputed only when owners change.
 */
import test from 'ava';
import { LifecycleState, Role, type Member, type MembershipView } from '../src/gen/spngd/v1/membership.js';
import type { LayerCost } from '../src/actors/ps/assignment.js';
import { Membership } from '../src/actors/ps/membership.js';

const LEASE = 1000;

/** Costs chosen so the greedy assignment is easy to work out by hand. */
const layers: LayerCost[] = [
  { layer: 'fc1', aDim: 0, gDim: 0, cost: 100 },
  { layer: 'fc2', aDim: 0, gDim: 0, cost: 60 },
  { layer: 'fc3', aDim: 0, gDim: 0, cost: 50 },
];

function member(role: Role, id = '', capacity = 1): Member {
  return { id, role, address: '', state: LifecycleState.LIFECYCLE_STATE_STARTING, joinedEpoch: 0, lastHeartbeatUnixMs: 0, capacity };
}

function create() {
  const m = new Membership(layers, member(Role.ROLE_PARAMETER_SERVER, 'ps'), LEASE);
  const events: { view: MembershipView; reason: string }[] = [];
  m.on('change', (view, reason) => events.push({ view, reason }));
  return { m, events };
}

function owners(m: Membership): string[] {
  return m.layerAssignment().layers.map((l) => l.ownerId);
}

test('starts at epoch 1 with only the PS and every layer unassigned', (t) => {
  const { m } = create();
  t.is(m.epoch, 1);
  t.deepEqual(
    m.list().map((x) => x.id),
    ['ps'],
  );
  t.deepEqual(owners(m), ['', '', '']);
  t.deepEqual(
    m.layerAssignment().layers.map((l) => l.layer),
    ['fc1', 'fc2', 'fc3'],
  );
  t.is(m.ownerOf('fc1'), '');
  t.is(m.ownerOf('no-such-layer'), '');
});

test('join assigns ids per role, bumps the epoch and records the joining epoch', (t) => {
  const { m, events } = create();
  const before = Date.now();
  const w1 = m.join(member(Role.ROLE_WORKER));
  const w2 = m.join(member(Role.ROLE_WORKER));
  const o1 = m.join(member(Role.ROLE_FACTOR_OWNER));
  t.is(w1.id, 'worker-1');
  t.is(w2.id, 'worker-2');
  t.is(o1.id, 'owner-1');
  t.is(m.epoch, 4);
  t.deepEqual(
    [w1, w2, o1].map((x) => x.joinedEpoch),
    [2, 3, 4],
  );
  t.true(w1.lastHeartbeatUnixMs >= before && w1.lastHeartbeatUnixMs <= Date.now());
  t.deepEqual(
    events.map((e) => e.reason),
    ['joined: worker-1', 'joined: worker-2', 'joined: owner-1'],
  );
  t.deepEqual(
    events.map((e) => e.view.epoch),
    [2, 3, 4],
  );
  // list() is sorted by id, whatever the order of joining.
  t.deepEqual(
    m.list().map((x) => x.id),
    ['owner-1', 'ps', 'worker-1', 'worker-2'],
  );
  t.deepEqual(
    m.list(Role.ROLE_WORKER).map((x) => x.id),
    ['worker-1', 'worker-2'],
  );
});

test('a generated id skips ids already taken, and a known id rejoins (replacing the member)', (t) => {
  const { m, events } = create();
  m.join(member(Role.ROLE_WORKER, 'worker-1'));
  const w = m.join(member(Role.ROLE_WORKER));
  t.is(w.id, 'worker-2');
  const again = m.join({ ...member(Role.ROLE_WORKER, 'worker-1'), address: 'new:1' });
  t.is(again.id, 'worker-1');
  t.is(m.get('worker-1')?.address, 'new:1');
  t.is(m.list(Role.ROLE_WORKER).length, 2);
  t.is(events.at(-1)?.reason, 'rejoined: worker-1');
  t.is(m.epoch, 4);
});

test('workers joining or leaving do not touch the assignment; owners do', (t) => {
  const { m } = create();
  m.join(member(Role.ROLE_FACTOR_OWNER, 'owner-a'));
  t.deepEqual(owners(m), ['owner-a', 'owner-a', 'owner-a']);
  const first = m.layerAssignment().layers;
  m.join(member(Role.ROLE_WORKER));
  t.true(m.leave('worker-1', 'test'));
  // Same owners, and no layer reported as moved by the worker changes.
  t.deepEqual(m.layerAssignment().layers, first);
  t.is(m.layerAssignment().epoch, m.epoch);

  // A second owner: fc1 (100) to owner-a, then fc2 (60) to owner-b (60 < 160), then fc3 (50):
  // owner-a would reach 150, owner-b 110, so owner-b.
  m.join(member(Role.ROLE_FACTOR_OWNER, 'owner-b'));
  t.deepEqual(owners(m), ['owner-a', 'owner-b', 'owner-b']);
  t.deepEqual(
    m.layerAssignment().layers.map((l) => l.previousOwnerId),
    ['', 'owner-a', 'owner-a'],
  );
  t.is(m.ownerOf('fc3'), 'owner-b');
  // A worker joining now leaves the assignment as it is, including which layers just moved.
  const moved = m.layerAssignment().layers;
  m.join(member(Role.ROLE_WORKER));
  t.deepEqual(m.layerAssignment().layers, moved);

  // owner-a leaves: everything goes to owner-b, fc1 reported as moved from owner-a.
  t.true(m.leave('owner-a', 'drained'));
  t.deepEqual(owners(m), ['owner-b', 'owner-b', 'owner-b']);
  t.deepEqual(
    m.layerAssignment().layers.map((l) => l.previousOwnerId),
    ['owner-a', '', ''],
  );
  // The last owner leaves: no owner for any layer.
  t.true(m.leave('owner-b', 'drained'));
  t.deepEqual(owners(m), ['', '', '']);
});

test('owner capacity weighs the assignment', (t) => {
  const { m } = create();
  m.join(member(Role.ROLE_FACTOR_OWNER, 'owner-a', 1));
  m.join(member(Role.ROLE_FACTOR_OWNER, 'owner-b', 4));
  // fc1: a 100/1, b 100/4 = 25 → b. fc2: a 60, b 160/4 = 40 → b. fc3: a 50, b 210/4 = 52.5 → a.
  t.deepEqual(owners(m), ['owner-b', 'owner-b', 'owner-a']);
});

test('leave: unknown ids and the PS are refused without an epoch change', (t) => {
  const { m, events } = create();
  m.join(member(Role.ROLE_WORKER));
  const epoch = m.epoch;
  t.false(m.leave('nobody', 'x'));
  t.false(m.leave('ps', 'x'));
  t.is(m.epoch, epoch);
  t.is(events.length, 1);
  t.true(m.leave('worker-1', 'bye'));
  t.is(m.epoch, epoch + 1);
  t.is(events.at(-1)?.reason, 'left: worker-1 (bye)');
  t.is(m.get('worker-1'), undefined);
  t.false(m.leave('worker-1', 'again'));
});

test('heartbeat renews the lease and sets the state unless unspecified; unknown members must rejoin', (t) => {
  const { m } = create();
  const w = m.join(member(Role.ROLE_WORKER));
  const epoch = m.epoch;
  m.get(w.id)!.lastHeartbeatUnixMs = 5;
  t.true(m.heartbeat(w.id, LifecycleState.LIFECYCLE_STATE_READY));
  t.true(m.get(w.id)!.lastHeartbeatUnixMs >= Date.now() - 1000);
  t.is(m.get(w.id)!.state, LifecycleState.LIFECYCLE_STATE_READY);
  t.true(m.heartbeat(w.id, LifecycleState.LIFECYCLE_STATE_UNSPECIFIED));
  t.is(m.get(w.id)!.state, LifecycleState.LIFECYCLE_STATE_READY);
  t.false(m.heartbeat('worker-9', LifecycleState.LIFECYCLE_STATE_READY));
  // Heartbeats are not membership changes.
  t.is(m.epoch, epoch);
});

test('expire removes members whose lease ran out (strictly), never the PS, one epoch per member', (t) => {
  const { m, events } = create();
  const w = m.join(member(Role.ROLE_WORKER));
  const o = m.join(member(Role.ROLE_FACTOR_OWNER));
  const ps = m.get('ps')!;
  const tw = 1_000_000;
  m.get(w.id)!.lastHeartbeatUnixMs = tw;
  m.get(o.id)!.lastHeartbeatUnixMs = tw + 500;
  ps.lastHeartbeatUnixMs = 0;
  const epoch = m.epoch;
  // Exactly leaseMs after the last heartbeat: still alive.
  t.deepEqual(m.expire(tw + LEASE), []);
  t.is(m.epoch, epoch);
  t.deepEqual(m.expire(tw + LEASE + 1), [w.id]);
  t.is(m.epoch, epoch + 1);
  t.is(events.at(-1)?.reason, `left: ${w.id} (no heartbeat for ${LEASE} ms)`);
  t.is(m.ownerOf('fc1'), o.id);
  t.deepEqual(m.expire(tw + 10 * LEASE), [o.id]);
  t.is(m.epoch, epoch + 2);
  t.is(m.ownerOf('fc1'), '');
  t.deepEqual(
    m.list().map((x) => x.id),
    ['ps'],
  );
});

test('view carries the epoch, members, assignment and the next step; copies the assignment', (t) => {
  const { m } = create();
  m.join(member(Role.ROLE_FACTOR_OWNER, 'owner-a'));
  m.nextStep = 42;
  const v = m.view();
  t.is(v.epoch, 2);
  t.is(v.firstStep, 42);
  t.deepEqual(
    v.members.map((x) => x.id),
    ['owner-a', 'ps'],
  );
  t.is(v.assignment!.epoch, 2);
  v.assignment!.layers[0].ownerId = 'tampered';
  t.is(m.ownerOf('fc1'), 'owner-a');
});
