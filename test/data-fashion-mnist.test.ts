import test from 'ava';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  bundledDataDir,
  DataFileError,
  describeData,
  loadFashionMnist,
  loadSplit,
  normalizeRange,
  packageRoot,
  PIXEL_MEAN,
  PIXEL_STD,
  resolveDataDir,
} from '../src/data/index.js';

const REPO = resolve(fileURLToPath(new URL('..', import.meta.url)));
const REAL = join(REPO, 'data', 'fashion-mnist');
const NAMES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'];

const tmp = mkdtempSync(join(tmpdir(), 'spngd-fmnist-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

function idx(dims: number[], payload: Uint8Array): Buffer {
  const h = Buffer.alloc(4 + 4 * dims.length);
  h[2] = 0x08;
  h[3] = dims.length;
  dims.forEach((d, i) => h.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([h, payload]);
}

/** A tiny but valid data directory: n train / m test samples; image k is filled with pixel value k. */
function fixture(name: string, n = 4, m = 3, gz = true): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  const write = (base: string, bytes: Buffer): void => writeFileSync(join(dir, gz ? `${base}.gz` : base), gz ? gzipSync(bytes) : bytes);
  const images = (k: number): Buffer => {
    const p = new Uint8Array(k * 784);
    for (let i = 0; i < k; i++) p.fill(i * 85, i * 784, (i + 1) * 784);
    return idx([k, 28, 28], p);
  };
  const labels = (k: number): Buffer =>
    idx(
      [k],
      Uint8Array.from({ length: k }, (_, i) => (i * 3) % 10),
    );
  write(NAMES[0], images(n));
  write(NAMES[1], labels(n));
  write(NAMES[2], images(m));
  write(NAMES[3], labels(m));
  return dir;
}

const nowhere = join(tmp, 'nowhere');

test('package root and bundled directory are found from import.meta.url', (t) => {
  t.is(packageRoot(), REPO);
  t.is(bundledDataDir(), join(REPO, 'data', 'fashion-mnist'));
  for (const n of NAMES) t.true(existsSync(join(bundledDataDir(), `${n}.gz`)), n);
});

test('the bundled gzip files match their SHA256SUMS', (t) => {
  const sha = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');
  const sums = new Map<string, string>();
  for (const line of readFileSync(join(bundledDataDir(), 'SHA256SUMS'), 'utf8').trim().split('\n')) {
    const [hash = '', name = ''] = line.trim().split(/\s+/);
    sums.set(name, hash);
  }
  for (const n of NAMES) t.is(sha(join(bundledDataDir(), `${n}.gz`)), sums.get(`${n}.gz`) ?? `no line for ${n}.gz`, n);
});

test('resolution order: --data, then SPNGD_DATA, then system, then bundled', (t) => {
  const flagDir = fixture('flag');
  const envDir = fixture('env');
  const sysDir = fixture('system');
  const bunDir = fixture('bundled');
  const base = { systemDir: sysDir, bundledDir: bunDir };
  t.deepEqual(resolveDataDir({ ...base, dir: flagDir, env: { SPNGD_DATA: envDir } }), { dir: flagDir, source: 'flag' });
  t.deepEqual(resolveDataDir({ ...base, env: { SPNGD_DATA: envDir } }), { dir: envDir, source: 'env' });
  t.deepEqual(resolveDataDir({ ...base, dir: '', env: { SPNGD_DATA: '' } }), { dir: sysDir, source: 'system' });
  t.deepEqual(resolveDataDir({ ...base, env: {} }), { dir: sysDir, source: 'system' });
  t.deepEqual(resolveDataDir({ systemDir: nowhere, bundledDir: bunDir, env: {} }), { dir: bunDir, source: 'bundled' });
  // A system directory missing some files is skipped.
  const partial = join(tmp, 'partial');
  mkdirSync(partial);
  writeFileSync(join(partial, 'train-images-idx3-ubyte.gz'), readFileSync(join(sysDir, 'train-images-idx3-ubyte.gz')));
  t.deepEqual(resolveDataDir({ systemDir: partial, bundledDir: bunDir, env: {} }), { dir: bunDir, source: 'bundled' });
  // Default bundled directory is the repository copy (the system path is absent on this machine or not).
  const d = resolveDataDir({ systemDir: nowhere, env: {} });
  t.deepEqual(d, { dir: bundledDataDir(), source: 'bundled' });
  // process.env is read when no env is passed.
  const saved = process.env.SPNGD_DATA;
  process.env.SPNGD_DATA = envDir;
  try {
    t.deepEqual(resolveDataDir(base), { dir: envDir, source: 'env' });
  } finally {
    if (saved === undefined) delete process.env.SPNGD_DATA;
    else process.env.SPNGD_DATA = saved;
  }
});

test('explicit locations that do not exist are errors, not silently skipped', (t) => {
  const e1 = t.throws(() => resolveDataDir({ dir: nowhere, env: {} }), { instanceOf: DataFileError });
  t.regex(e1!.message, /--data does not exist/);
  t.true(e1!.message.includes(nowhere));
  const e2 = t.throws(() => resolveDataDir({ env: { SPNGD_DATA: nowhere } }), { instanceOf: DataFileError });
  t.regex(e2!.message, /SPNGD_DATA does not exist/);
  const e3 = t.throws(() => resolveDataDir({ env: {}, systemDir: nowhere, bundledDir: join(nowhere, 'x') }), {
    instanceOf: DataFileError,
  });
  t.regex(e3!.message, /no Fashion-MNIST data found/);
});

test('a split with a missing file names it', async (t) => {
  const dir = join(tmp, 'only-train');
  mkdirSync(dir);
  writeFileSync(join(dir, 'train-images-idx3-ubyte'), idx([1, 28, 28], new Uint8Array(784)));
  writeFileSync(join(dir, 'train-labels-idx1-ubyte'), idx([1], new Uint8Array(1)));
  const tr = await loadSplit('train', { dir, verify: false });
  t.is(tr.n, 1);
  const err = await t.throwsAsync(loadSplit('test', { dir }), { instanceOf: DataFileError });
  t.regex(err!.message, /t10k-images-idx3-ubyte/);
  t.regex(err!.message, /not found/);
});

test('normalisation, limit, raw files and checksum warnings on a tiny fixture', async (t) => {
  const dir = fixture('tiny-raw', 4, 3, false);
  const seen: string[] = [];
  const s = await loadSplit('train', { dir, onWarning: (m) => seen.push(m) });
  t.is(s.n, 4);
  t.is(s.dim, 784);
  t.is(s.pixels.length, 4 * 784);
  t.deepEqual([s.rows, s.cols], [28, 28]);
  t.is(s.source, 'flag');
  t.deepEqual(Array.from(s.y), [0, 3, 6, 9]);
  const x = normalizeRange(s, 0, 4, new Float32Array(4 * 784));
  for (let i = 0; i < 4; i++) {
    t.is(s.pixels[i * 784], i * 85);
    const want = Math.fround(((i * 85) / 255 - PIXEL_MEAN) / PIXEL_STD);
    t.is(x[i * 784], want);
    t.is(x[i * 784 + 783], want);
  }
  t.false(s.verified);
  t.is(s.warnings.length, 2);
  t.deepEqual(seen, s.warnings);
  t.regex(s.warnings[0], /SHA-256/);
  const u = await loadSplit('test', { dir, limit: 2, normalization: 'unit', verify: false });
  t.is(u.n, 2);
  t.is(u.totalInFile, 3);
  t.is(u.verified, undefined);
  t.is(normalizeRange(u, 1, 2, new Float32Array(784))[0], Math.fround(85 / 255));
  t.is(u.pixels.length, 2 * 784);
  await t.throwsAsync(loadSplit('test', { dir, limit: 0 }), { instanceOf: RangeError });
  const big = await loadSplit('test', { dir, limit: 100, verify: false });
  t.is(big.n, 3);
});

test('real data from the bundled copy with limits verifies its checksums', async (t) => {
  const d = await loadFashionMnist({ env: {}, systemDir: nowhere, limitTrain: 1000, limitTest: 500 });
  t.is(d.source, 'bundled');
  t.is(d.dir, bundledDataDir());
  t.is(d.train.n, 1000);
  t.is(d.train.totalInFile, 60000);
  t.is(d.test.n, 500);
  t.is(d.test.totalInFile, 10000);
  t.is(d.train.pixels.length, 1000 * 784);
  t.true(d.train.verified);
  t.true(d.test.verified);
  t.deepEqual(d.warnings, []);
  t.deepEqual(Array.from(d.train.y.subarray(0, 10)), [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
  t.regex(describeData(d), /bundled\): 1000\/60000 train, 500\/10000 test$/);
});

test('the standardisation constants are the real train-set mean and std', async (t) => {
  const s = await loadSplit('train', { dir: REAL, verify: false });
  t.is(s.n, 60000);
  const x = normalizeRange(s, 0, s.n, new Float32Array(s.n * s.dim));
  let sum = 0;
  let sq = 0;
  for (let i = 0; i < x.length; i++) {
    sum += x[i];
    sq += x[i] * x[i];
  }
  const mean = sum / x.length;
  t.true(Math.abs(mean) < 1e-6, `mean ${mean}`);
  t.true(Math.abs(Math.sqrt(sq / x.length - mean * mean) - 1) < 1e-6);
});

test('raw (un-gzipped) copies of the real files verify against the known sums', async (t) => {
  const dir = join(tmp, 'raw-real');
  mkdirSync(dir);
  for (const n of NAMES.slice(2)) writeFileSync(join(dir, n), gunzipSync(readFileSync(join(REAL, `${n}.gz`))));
  const s = await loadSplit('test', { dir });
  t.true(s.verified);
  t.is(s.n, 10000);
  t.is(s.files.images, join(dir, 't10k-images-idx3-ubyte'));
});
