/**
 * Layer-to-owner assignment (src/actors/ps/assignment.ts): factor dimensions and inversion cost of a
 * layer, the greedy cost-balanced assignment, its determinism, and what it reports when owners change.
 */
import test from 'ava';
import { assignLayers, layerCost, type LayerCost, type OwnerCapacity } from '../src/actors/ps/assignment.js';

function cost(layer: string, c: number): LayerCost {
  return { layer, aDim: 0, gDim: 0, cost: c };
}

function byLayer(a: { layer: string; ownerId: string }[]): Record<string, string> {
  return Object.fromEntries(a.map((l) => [l.layer, l.ownerId]));
}

test('layerCost: linear/conv factors are (in+1) and out, cost their cubes; BN costs 8 per channel', (t) => {
  t.deepEqual(layerCost({ name: 'fc', kind: 'linear', inFeatures: 3, outFeatures: 2 }), { layer: 'fc', aDim: 4, gDim: 2, cost: 64 + 8 });
  t.deepEqual(layerCost({ name: 'c1', kind: 'conv', inFeatures: 27, outFeatures: 16 }), { layer: 'c1', aDim: 28, gDim: 16, cost: 21952 + 4096 });
  t.deepEqual(layerCost({ name: 'bn', kind: 'bn', inFeatures: 5, outFeatures: 5 }), { layer: 'bn', aDim: 0, gDim: 5, cost: 40 });
});

test('layerCost keeps only the spec fields (a whole layer object may be passed)', (t) => {
  const layer = { name: 'fc', kind: 'linear' as const, inFeatures: 1, outFeatures: 1, weight: new Float32Array(1) };
  t.deepEqual(Object.keys(layerCost(layer)).sort(), ['aDim', 'cost', 'gDim', 'layer']);
});

test('no owners: every layer unassigned, previous owners reported as moved', (t) => {
  const layers = [cost('a', 1), cost('b', 2)];
  t.deepEqual(assignLayers(layers, []), [
    { layer: 'a', aDim: 0, gDim: 0, cost: 1, ownerId: '', previousOwnerId: '' },
    { layer: 'b', aDim: 0, gDim: 0, cost: 2, ownerId: '', previousOwnerId: '' },
  ]);
  const prev = assignLayers(layers, [{ id: 'o1', capacity: 1 }]);
  t.deepEqual(
    assignLayers(layers, [], prev).map((l) => l.previousOwnerId),
    ['o1', 'o1'],
  );
});

test('largest first, each to the owner that would finish it soonest; result in model order', (t) => {
  // Sorted: e 9, b 7, d 6, a 5, c 4 (hand-worked):
  // e → o1 (9 vs 9, tie → smaller id); b → o2 (7 < 16); d → o2 (13 < 15); a → o1 (14 < 18); c → o2 (17 < 18).
  const layers = [cost('a', 5), cost('b', 7), cost('c', 4), cost('d', 6), cost('e', 9)];
  const owners = [
    { id: 'o2', capacity: 1 },
    { id: 'o1', capacity: 1 },
  ];
  const out = assignLayers(layers, owners);
  t.deepEqual(
    out.map((l) => l.layer),
    ['a', 'b', 'c', 'd', 'e'],
  );
  t.deepEqual(byLayer(out), { a: 'o1', b: 'o2', c: 'o2', d: 'o2', e: 'o1' });
  // Costs and dims are carried through unchanged.
  t.deepEqual(
    out.map((l) => l.cost),
    [5, 7, 4, 6, 9],
  );
});

test('capacity divides the load: a 3× owner takes proportionally more', (t) => {
  // 4 layers of cost 10; fast (3) vs slow (1):
  // #1: fast 10/3 < slow 10 → fast; #2: fast 20/3 < 10 → fast; #3: fast 10 vs slow 10, tie → 'fast' < 'slow';
  // #4: fast 40/3 > slow 10 → slow.
  const layers = ['l1', 'l2', 'l3', 'l4'].map((n) => cost(n, 10));
  const out = assignLayers(layers, [
    { id: 'slow', capacity: 1 },
    { id: 'fast', capacity: 3 },
  ]);
  t.deepEqual(byLayer(out), { l1: 'fast', l2: 'fast', l3: 'fast', l4: 'slow' });
  // A capacity of 0 or below counts as 1.
  const zero = assignLayers(layers, [
    { id: 'a', capacity: 0 },
    { id: 'b', capacity: -2 },
  ]);
  t.deepEqual(byLayer(zero), { l1: 'a', l2: 'b', l3: 'a', l4: 'b' });
});

test('equal costs are taken in layer-name order, so the assignment does not depend on model order', (t) => {
  const owners = [
    { id: 'x', capacity: 1 },
    { id: 'y', capacity: 1 },
  ];
  const layers = [cost('m', 3), cost('k', 3), cost('z', 3)];
  // k → x, m → y, z → x.
  t.deepEqual(byLayer(assignLayers(layers, owners)), { k: 'x', m: 'y', z: 'x' });
  t.deepEqual(byLayer(assignLayers([...layers].reverse(), owners)), { k: 'x', m: 'y', z: 'x' });
});

/** A small deterministic generator for the property tests. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function shuffle<T>(xs: T[], rnd: () => number): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

test('deterministic: any order of owners and of the previous assignment gives the same result', (t) => {
  const rnd = lcg(7);
  for (let trial = 0; trial < 50; trial++) {
    const layers = Array.from({ length: 3 + Math.floor(rnd() * 6) }, (_, i) => cost(`L${i}`, 1 + Math.floor(rnd() * 20)));
    const owners: OwnerCapacity[] = Array.from({ length: 1 + Math.floor(rnd() * 4) }, (_, i) => ({ id: `owner-${i}`, capacity: 1 + Math.floor(rnd() * 3) }));
    const ref = assignLayers(layers, owners);
    t.deepEqual(assignLayers(layers, shuffle(owners, rnd)), ref);
    t.deepEqual(byLayer(assignLayers(shuffle(layers, rnd), owners)), byLayer(ref));
  }
});

/** The best makespan over every assignment (brute force), identical owners. */
function optimalMakespan(costs: number[], owners: number): number {
  let best = Infinity;
  const load = new Array<number>(owners).fill(0);
  const go = (i: number) => {
    if (i === costs.length) {
      best = Math.min(best, Math.max(...load));
      return;
    }
    for (let o = 0; o < owners; o++) {
      load[o] += costs[i];
      if (Math.max(...load) < best) go(i + 1);
      load[o] -= costs[i];
    }
  };
  go(0);
  return best;
}

test("balanced: with identical owners the heaviest load is within Graham's LPT bound (4/3 − 1/(3m)) of optimal", (t) => {
  const rnd = lcg(11);
  let strictlyWorse = 0;
  for (let trial = 0; trial < 60; trial++) {
    const m = 2 + Math.floor(rnd() * 2);
    const costs = Array.from({ length: 4 + Math.floor(rnd() * 4) }, () => 1 + Math.floor(rnd() * 30));
    const layers = costs.map((c, i) => cost(`L${i}`, c));
    const owners = Array.from({ length: m }, (_, i) => ({ id: `o${i}`, capacity: 1 }));
    const out = assignLayers(layers, owners);
    const load = new Map<string, number>();
    for (const l of out) load.set(l.ownerId, (load.get(l.ownerId) ?? 0) + l.cost);
    const makespan = Math.max(...load.values());
    const opt = optimalMakespan(costs, m);
    t.true(makespan <= (4 / 3 - 1 / (3 * m)) * opt + 1e-9, `costs ${costs} on ${m}: ${makespan} vs optimal ${opt}`);
    if (makespan > opt) strictlyWorse++;
  }
  t.log(`LPT above optimal in ${strictlyWorse} of 60 instances`);
});

test('rebalancing when owners change: previousOwnerId names the old owner of moved layers only', (t) => {
  const layers = [cost('a', 8), cost('b', 4), cost('c', 2), cost('d', 1)];
  const one = assignLayers(layers, [{ id: 'o1', capacity: 1 }]);
  t.deepEqual(byLayer(one), { a: 'o1', b: 'o1', c: 'o1', d: 'o1' });
  t.deepEqual(
    one.map((l) => l.previousOwnerId),
    ['', '', '', ''],
  );
  // o2 joins: a → o1 (8), b → o2 (4), c → o2 (6), d → o2 (7 < 9).
  const two = assignLayers(
    layers,
    [
      { id: 'o1', capacity: 1 },
      { id: 'o2', capacity: 1 },
    ],
    one,
  );
  t.deepEqual(byLayer(two), { a: 'o1', b: 'o2', c: 'o2', d: 'o2' });
  t.deepEqual(
    two.map((l) => l.previousOwnerId),
    ['', 'o1', 'o1', 'o1'],
  );
  // Recomputing with the same owners moves nothing.
  t.deepEqual(
    assignLayers(
      layers,
      [
        { id: 'o2', capacity: 1 },
        { id: 'o1', capacity: 1 },
      ],
      two,
    ).map((l) => l.previousOwnerId),
    ['', '', '', ''],
  );
  // o1 leaves: only a moves.
  const back = assignLayers(layers, [{ id: 'o2', capacity: 1 }], two);
  t.deepEqual(byLayer(back), { a: 'o2', b: 'o2', c: 'o2', d: 'o2' });
  t.deepEqual(
    back.map((l) => l.previousOwnerId),
    ['o1', '', '', ''],
  );
  // A layer new to the assignment (no previous entry) is not reported as moved.
  const grown = assignLayers([...layers, cost('e', 1)], [{ id: 'o2', capacity: 1 }], back);
  t.is(grown.at(-1)!.previousOwnerId, '');
});
