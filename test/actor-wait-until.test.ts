/**
 * waitUntil (src/actors/common/wait-until.ts) with real timers: it returns as soon as the
 * condition holds, wakes on `changed` before its poll interval, and rejects at the deadline with
 * an error that says what it waited for.
 */
import test from 'ava';
import { deferred } from '../src/actors/common/deferred.js';
import { DeadlineError, waitUntil, waitUntilOrTimeout } from '../src/actors/common/wait-until.js';

test('returns at once when the condition already holds, even past the deadline', async (t) => {
  const t0 = performance.now();
  await waitUntil(() => true, { deadline: Date.now() - 1000, what: 'nothing' });
  t.true(performance.now() - t0 < 500);
});

test('wakes when `changed` resolves, well before the poll interval', async (t) => {
  let ready = false;
  let change = deferred<void>();
  setTimeout(() => {
    ready = true;
    change.resolve();
  }, 30);
  const t0 = performance.now();
  await waitUntil(() => ready, { deadline: Date.now() + 5000, what: 'ready', pollMs: 10000, changed: () => (change = deferred<void>()).promise });
  const took = performance.now() - t0;
  t.true(took >= 25 && took < 5000, `took ${took.toFixed(0)} ms`);
});

test('without a promise to wait on it polls', async (t) => {
  let ready = false;
  setTimeout(() => (ready = true), 60);
  const t0 = performance.now();
  await waitUntil(() => ready, { deadline: Date.now() + 5000, what: 'ready', pollMs: 20 });
  const took = performance.now() - t0;
  t.true(took >= 55 && took < 3000, `took ${took.toFixed(0)} ms`);
});

test('rejects at the deadline with a DeadlineError naming what it waited for', async (t) => {
  const t0 = performance.now();
  const err = await t.throwsAsync(
    waitUntil(() => false, { deadline: Date.now() + 150, what: 'owner-1 to answer', pollMs: 40 }),
    {
      instanceOf: DeadlineError,
    },
  );
  const took = performance.now() - t0;
  t.true(took >= 140 && took < 3000, `rejected after ${took.toFixed(0)} ms`);
  t.regex(err.message, /^owner-1 to answer: still waiting after \d+ ms, deadline passed$/);
  t.is(err.what, 'owner-1 to answer');
  t.true(err.waitedMs >= 140);
});

test('the last pause is cut to the deadline, not the poll interval', async (t) => {
  const t0 = performance.now();
  await t.throwsAsync(
    waitUntil(() => false, { deadline: Date.now() + 100, what: 'x', pollMs: 20000 }),
    { instanceOf: DeadlineError },
  );
  t.true(performance.now() - t0 < 10000);
});

test('waitUntilOrTimeout says whether the condition held, and passes other errors on', async (t) => {
  t.true(await waitUntilOrTimeout(() => true, { deadline: Date.now() + 100, what: 'x' }));
  t.false(await waitUntilOrTimeout(() => false, { deadline: Date.now() + 50, what: 'x', pollMs: 10 }));
  await t.throwsAsync(
    waitUntilOrTimeout(
      () => {
        throw new Error('broken condition');
      },
      { deadline: Date.now() + 50, what: 'x' },
    ),
    { message: 'broken condition' },
  );
});
