import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { DataFileError, readIdx, readIdxImages, readIdxLabels } from '../src/data/idx.js';
import { loadSplit } from '../src/data/fashion-mnist.js';

const REAL = new URL('../data/fashion-mnist/', import.meta.url).pathname;

const tmp = mkdtempSync(join(tmpdir(), 'spngd-idx-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

let counter = 0;
function tmpFile(name: string, bytes: Uint8Array): string {
  const p = join(tmp, `${counter++}-${name}`);
  writeFileSync(p, bytes);
  return p;
}

/** An IDX file: header (magic 00 00 type ndims, big-endian dims) followed by `payload`. */
function idx(dims: number[], payload: Uint8Array, type = 0x08): Buffer {
  const h = Buffer.alloc(4 + 4 * dims.length);
  h[2] = type;
  h[3] = dims.length;
  dims.forEach((d, i) => h.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([h, payload]);
}

function pixels(n: number): Uint8Array {
  const p = new Uint8Array(n);
  for (let i = 0; i < n; i++) p[i] = (i * 37) & 0xff;
  return p;
}

async function rejects(t: import('ava').ExecutionContext, p: Promise<unknown>, file: string, ...patterns: RegExp[]): Promise<void> {
  const err = await t.throwsAsync(p, { instanceOf: DataFileError });
  if (!err) return;
  t.true(err.message.includes(file), `message names the file: ${err.message}`);
  for (const re of patterns) t.regex(err.message, re);
}

test('reads the real Fashion-MNIST files, matching an independent parse', async (t) => {
  const [trainImg, trainLab, testImg, testLab] = await Promise.all([
    readIdxImages(join(REAL, 'train-images-idx3-ubyte.gz'), { rows: 28, cols: 28 }),
    readIdxLabels(join(REAL, 'train-labels-idx1-ubyte.gz')),
    readIdxImages(join(REAL, 't10k-images-idx3-ubyte.gz'), { rows: 28, cols: 28 }),
    readIdxLabels(join(REAL, 't10k-labels-idx1-ubyte.gz')),
  ]);
  t.is(trainImg.count, 60000);
  t.is(trainImg.pixels.length, 60000 * 784);
  t.true(trainImg.gzip);
  t.is(trainLab.count, 60000);
  t.is(testImg.count, 10000);
  t.is(testLab.count, 10000);

  // Independent parse: gunzip and skip the 8-byte label header / 16-byte image header.
  const rawTrainLab = gunzipSync(readFileSync(join(REAL, 'train-labels-idx1-ubyte.gz')));
  const rawTestLab = gunzipSync(readFileSync(join(REAL, 't10k-labels-idx1-ubyte.gz')));
  t.deepEqual(Array.from(trainLab.labels.subarray(0, 20)), Array.from(rawTrainLab.subarray(8, 28)));
  t.deepEqual(Array.from(testLab.labels.subarray(0, 20)), Array.from(rawTestLab.subarray(8, 28)));
  // Known first labels of Fashion-MNIST: ankle boot, T-shirt, T-shirt, dress, ...
  t.deepEqual(Array.from(trainLab.labels.subarray(0, 10)), [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
  t.deepEqual(Array.from(testLab.labels.subarray(0, 10)), [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
  const rawTestImg = gunzipSync(readFileSync(join(REAL, 't10k-images-idx3-ubyte.gz')));
  t.deepEqual(Buffer.from(testImg.pixels.subarray(0, 784 * 3)), rawTestImg.subarray(16, 16 + 784 * 3));
  // Per-class counts are balanced in the real set.
  const counts = new Array(10).fill(0);
  for (const l of trainLab.labels) counts[l]++;
  t.deepEqual(counts, new Array(10).fill(6000));
});

test('reads raw (uncompressed) IDX regardless of the file name', async (t) => {
  const f = tmpFile('images.gz', idx([2, 28, 28], pixels(2 * 784))); // .gz name, raw content
  const a = await readIdxImages(f, { rows: 28, cols: 28 });
  t.false(a.gzip);
  t.is(a.count, 2);
  t.deepEqual(a.pixels, pixels(2 * 784));
  const g = tmpFile('images-no-ext', gzipSync(idx([2, 28, 28], pixels(2 * 784)))); // gzip without .gz
  const b = await readIdx(g);
  t.true(b.gzip);
  t.deepEqual(b.dims, [2, 28, 28]);
});

test('rejects a missing file', async (t) => {
  const f = join(tmp, 'does-not-exist-idx3-ubyte');
  await rejects(t, readIdxImages(f), f, /not found|missing/);
});

test('rejects an empty file', async (t) => {
  const f = tmpFile('empty', new Uint8Array(0));
  await rejects(t, readIdxImages(f), f, /empty/);
});

test('rejects random bytes as neither gzip nor IDX', async (t) => {
  const bytes = new Uint8Array(1000);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7919 + 13) & 0xff;
  bytes[0] = 0x5a;
  bytes[1] = 0x3c;
  const f = tmpFile('random', bytes);
  await rejects(t, readIdxImages(f), f, /not gzip/, /not IDX/);
});

test('rejects a truncated raw image file with expected vs actual byte counts', async (t) => {
  const full = idx([5, 28, 28], pixels(5 * 784));
  const f = tmpFile('trunc-images', full.subarray(0, full.length - 100));
  await rejects(t, readIdxImages(f, { rows: 28, cols: 28 }), f, /truncated/, /3920 bytes/, /only 3820 bytes/);
});

test('rejects a truncated gzip stream', async (t) => {
  const gz = gzipSync(idx([50, 28, 28], pixels(50 * 784)));
  const f = tmpFile('trunc.gz', gz.subarray(0, Math.floor(gz.length / 2)));
  await rejects(t, readIdxImages(f), f, /corrupt gzip/, /truncated/);
});

test('rejects corrupt gzip data', async (t) => {
  const gz = Buffer.from(gzipSync(idx([50, 28, 28], pixels(50 * 784))));
  for (let i = 20; i < 60; i++) gz[i] ^= 0xa5;
  const f = tmpFile('corrupt.gz', gz);
  await rejects(t, readIdxImages(f), f, /corrupt gzip/);
});

test('rejects a header claiming more images than present', async (t) => {
  const f = tmpFile('claims-more.gz', gzipSync(idx([10, 28, 28], pixels(3 * 784))));
  await rejects(t, readIdxImages(f, { rows: 28, cols: 28 }), f, /truncated payload/, /needs 7840 bytes/, /only 2352 bytes/);
});

test('rejects a payload longer than the header says', async (t) => {
  const f = tmpFile('too-long', idx([2, 28, 28], pixels(3 * 784)));
  await rejects(t, readIdxImages(f), f, /longer than the header/, /784 extra/);
});

test('rejects a wrong magic inside gzip', async (t) => {
  const good = idx([2, 28, 28], pixels(2 * 784));
  good[0] = 0x08; // little-endian-written magic: 08 03 00 00
  good[1] = 0x03;
  good[2] = 0x00;
  good[3] = 0x00;
  const f = tmpFile('bad-magic.gz', gzipSync(good));
  await rejects(t, readIdxImages(f), f, /bad IDX magic/, /08 03 00 00/);
});

test('rejects an unsupported type code', async (t) => {
  const f = tmpFile('float-type', idx([2, 28, 28], pixels(2 * 784 * 4), 0x0d));
  await rejects(t, readIdxImages(f), f, /unsupported IDX type code 0x0d/, /float32/);
});

test('rejects the wrong number of dimensions', async (t) => {
  const f = tmpFile('images-2d', idx([2, 784], pixels(2 * 784)));
  await rejects(t, readIdxImages(f), f, /wrong number of dimensions/, /header says 2, expected 3/);
  const g = tmpFile('labels-2d', idx([4, 1], new Uint8Array(4)));
  await rejects(t, readIdxLabels(g), g, /wrong number of dimensions/, /header says 2, expected 1/);
  const h = tmpFile('zero-dims', Buffer.from([0, 0, 8, 0]));
  await rejects(t, readIdx(h), h, /number of dimensions is 0/);
  const k = tmpFile('short-header', Buffer.from([0, 0, 8, 3, 0, 0, 0, 5]));
  await rejects(t, readIdx(k), k, /truncated IDX header/, /need 16 header bytes/);
});

test('rejects 27×27 images when 28×28 is required', async (t) => {
  const f = tmpFile('images-27', gzipSync(idx([3, 27, 27], pixels(3 * 27 * 27))));
  await rejects(t, readIdxImages(f, { rows: 28, cols: 28 }), f, /27×27, expected 28×28/);
  const a = await readIdxImages(f); // fine when no size is required
  t.is(a.rows, 27);
});

test('rejects a label value out of range, naming the first bad index', async (t) => {
  const f = tmpFile('labels-10', idx([6], Uint8Array.from([1, 2, 9, 10, 11, 0])));
  await rejects(t, readIdxLabels(f), f, /label value 10 at index 3/, /0\.\.9/);
});

test('rejects mismatched image/label counts in a split', async (t) => {
  const dir = mkdtempSync(join(tmp, 'mismatch-'));
  writeFileSync(join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(idx([5, 28, 28], pixels(5 * 784))));
  writeFileSync(join(dir, 'train-labels-idx1-ubyte'), idx([4], Uint8Array.from([0, 1, 2, 3])));
  const err = await t.throwsAsync(loadSplit('train', { dir, verify: false }), { instanceOf: DataFileError });
  t.regex(err!.message, /count mismatch/);
  t.regex(err!.message, /5 images/);
  t.regex(err!.message, /4 labels/);
  t.true(err!.message.includes('train-images-idx3-ubyte.gz'));
  t.true(err!.message.includes('train-labels-idx1-ubyte'));
});
