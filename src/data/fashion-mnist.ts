/**
 * Fashion-MNIST loading: where the files are, reading a split, normalising the images.
 *
 * Directory resolution (first match wins):
 *   1. an explicit `dir` (the CLI's --data flag)          -> source 'flag'
 *   2. the environment variable SPNGD_DATA                  -> source 'env'
 *   3. /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist), if it holds all four files
 *                                                           -> source 'system'
 *   4. the copy bundled in this repository, <package root>/data/fashion-mnist -> source 'bundled'
 * An explicit flag or SPNGD_DATA that points nowhere is an error, never silently skipped.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkSameCount, DataFileError, readIdxImages, readIdxLabels } from './idx.js';

export type Split = 'train' | 'test';
export type DataSource = 'flag' | 'env' | 'system' | 'bundled';

export const IMAGE_ROWS = 28;
export const IMAGE_COLS = 28;
export const IMAGE_SIZE = IMAGE_ROWS * IMAGE_COLS;
export const NUM_CLASSES = 10;
export const CLASS_NAMES: readonly string[] = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];

/**
 * Mean and standard deviation of the Fashion-MNIST training pixels after scaling to [0, 1],
 * over all 60000·784 = 47,040,000 pixels (population std), computed once from the real
 * train-images-idx3-ubyte: mean 0.2860405969804586, std 0.3530242445185261.
 * Both splits are standardised with these train-set constants: x = (pixel/255 - MEAN) / STD.
 */
export const PIXEL_MEAN = 0.2860405969804586;
export const PIXEL_STD = 0.3530242445185261;

export const SYSTEM_DATA_DIR = '/usr/share/datasets/fashion-mnist';
export const DATA_ENV_VAR = 'SPNGD_DATA';

/** Standard base names (without .gz) of the IDX files of each split. */
export const SPLIT_FILES: Record<Split, { images: string; labels: string }> = {
  train: { images: 'train-images-idx3-ubyte', labels: 'train-labels-idx1-ubyte' },
  test: { images: 't10k-images-idx3-ubyte', labels: 't10k-labels-idx1-ubyte' },
};

/**
 * SHA-256 of the decompressed IDX content of the real files (the same whether stored gzip or raw,
 * and independent of how they were compressed). A mismatch only warns: users may supply subsets.
 */
export const KNOWN_SHA256: Record<string, string> = {
  'train-images-idx3-ubyte': 'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888',
  'train-labels-idx1-ubyte': 'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9',
  't10k-images-idx3-ubyte': '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b',
  't10k-labels-idx1-ubyte': '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34',
};

/**
 * A data set in memory. The images stay as the file's bytes (n × dim row-major, one byte per
 * pixel, 0 = black): 47 MB for the training set instead of 188 MB as float32. A sample's inputs
 * are table[pixel] for each of its bytes, computed per batch (gather and evalBatches in batches.ts).
 */
export interface Dataset {
  /** Raw pixels, n × dim row-major, as stored in the IDX file. */
  pixels: Uint8Array;
  /** Float32 input value of each byte value 0..255 (pixelTable of the chosen normalisation). */
  table: Float32Array;
  y: Uint8Array;
  n: number;
  /** Features per sample (784 for Fashion-MNIST, one 1×28×28 image): channels × rows × cols. */
  dim: number;
  /** Image height and width (28 × 28); dim / (rows·cols) channels. */
  rows: number;
  cols: number;
  numClasses: number;
}

export interface ResolveOptions {
  /** Explicit directory (the --data flag). */
  dir?: string;
  /** Environment to read SPNGD_DATA from (default process.env). */
  env?: Record<string, string | undefined>;
  /** Override of the system directory (tests). */
  systemDir?: string;
  /** Override of the bundled directory (tests). */
  bundledDir?: string;
}

export interface ResolvedDataDir {
  dir: string;
  source: DataSource;
}

let cachedRoot: string | undefined;

/**
 * The package root (the directory with spngd's package.json), found by walking up from this
 * module, so it works from src/data/ (tsx) and from dist/src/data/ (after tsc) alike.
 */
export function packageRoot(): string {
  if (cachedRoot !== undefined) return cachedRoot;
  const here = dirname(fileURLToPath(import.meta.url));
  let withData: string | undefined;
  for (let d = here; ; ) {
    const pj = join(d, 'package.json');
    if (existsSync(pj)) {
      try {
        const name = (JSON.parse(readFileSync(pj, 'utf8')) as { name?: unknown }).name;
        if (name === 'spngd') return (cachedRoot = d);
      } catch {
        // not ours or unreadable: keep walking up
      }
    }
    if (withData === undefined && isDirectory(join(d, 'data', 'fashion-mnist'))) withData = d;
    const up = dirname(d);
    if (up === d) break;
    d = up;
  }
  // No spngd package.json above us (e.g. copied elsewhere): the nearest directory holding
  // data/fashion-mnist, else assume the source layout <root>/src/data.
  return (cachedRoot = withData ?? resolve(here, '..', '..'));
}

/** Where the repository's bundled copy of Fashion-MNIST lives. */
export function bundledDataDir(): string {
  return join(packageRoot(), 'data', 'fashion-mnist');
}

/** Path of a standard file in `dir`, preferring `<name>.gz`, then `<name>`; undefined if neither. */
export function findIdxFile(dir: string, base: string): string | undefined {
  for (const name of [`${base}.gz`, base]) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

function hasAllFiles(dir: string): boolean {
  return Object.values(SPLIT_FILES).every((f) => findIdxFile(dir, f.images) && findIdxFile(dir, f.labels));
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Picks the data directory: --data, then $SPNGD_DATA, then the system copy, then the bundled one. */
export function resolveDataDir(opts: ResolveOptions = {}): ResolvedDataDir {
  if (opts.dir !== undefined && opts.dir !== '') {
    const dir = resolve(opts.dir);
    if (!isDirectory(dir)) {
      throw new DataFileError(dir, 'data directory given by --data does not exist or is not a directory');
    }
    return { dir, source: 'flag' };
  }
  const env = opts.env ?? process.env;
  const fromEnv = env[DATA_ENV_VAR];
  if (fromEnv !== undefined && fromEnv !== '') {
    const dir = resolve(fromEnv);
    if (!isDirectory(dir)) {
      throw new DataFileError(dir, `data directory given by ${DATA_ENV_VAR} does not exist or is not a directory`);
    }
    return { dir, source: 'env' };
  }
  const systemDir = opts.systemDir ?? SYSTEM_DATA_DIR;
  if (isDirectory(systemDir) && hasAllFiles(systemDir)) return { dir: systemDir, source: 'system' };
  const bundled = opts.bundledDir ?? bundledDataDir();
  if (isDirectory(bundled) && hasAllFiles(bundled)) return { dir: bundled, source: 'bundled' };
  throw new DataFileError(
    bundled,
    `no Fashion-MNIST data found: no --data, ${DATA_ENV_VAR} unset, ${systemDir} and the bundled ` +
      `copy ${bundled} lack the four IDX files (install dataset-fashion-mnist or pass --data DIR)`,
  );
}

export interface LoadSplitOptions extends ResolveOptions {
  /** Keep only the first `limit` samples (quick runs). Clamped to the file's count. */
  limit?: number;
  /** 'standard' (default): (p/255 - PIXEL_MEAN)/PIXEL_STD; 'unit': p/255. */
  normalization?: 'standard' | 'unit';
  /** Check the files against KNOWN_SHA256 (default true); a mismatch only warns. */
  verify?: boolean;
  /** Called with each warning (also returned in `warnings`). */
  onWarning?: (message: string) => void;
}

export interface LoadedSplit extends Dataset {
  split: Split;
  /** Directory the files came from and how it was chosen. */
  dir: string;
  source: DataSource;
  files: { images: string; labels: string };
  /** Samples in the files (n is smaller when `limit` was applied). */
  totalInFile: number;
  /** Whether both files matched the known checksums (undefined when not verified). */
  verified: boolean | undefined;
  warnings: string[];
}

/**
 * Float32 value of each byte value 0..255 under the chosen normalisation, computed in float64 and
 * rounded once to float32: the per-batch lookup gives exactly the floats a Float32Array of the
 * whole normalised data set would hold.
 */
export function pixelTable(normalization: 'standard' | 'unit' = 'standard'): Float32Array {
  const t = new Float32Array(256);
  for (let p = 0; p < 256; p++) {
    const u = p / 255;
    t[p] = normalization === 'unit' ? u : (u - PIXEL_MEAN) / PIXEL_STD;
  }
  return t;
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

function checkLimit(limit: number | undefined): void {
  if (limit === undefined) return;
  if (!Number.isInteger(limit) || limit < 1) {
    throw new RangeError(`limit must be a positive integer, got ${limit}`);
  }
}

/** Loads one split from the resolved directory (see resolveDataDir). */
export async function loadSplit(split: Split, opts: LoadSplitOptions = {}): Promise<LoadedSplit> {
  checkLimit(opts.limit);
  const { dir, source } = resolveDataDir(opts);
  return loadSplitFrom(split, dir, source, opts);
}

async function loadSplitFrom(split: Split, dir: string, source: DataSource, opts: LoadSplitOptions): Promise<LoadedSplit> {
  const names = SPLIT_FILES[split];
  const imagesFile = findIdxFile(dir, names.images) ?? join(dir, `${names.images}.gz`);
  const labelsFile = findIdxFile(dir, names.labels) ?? join(dir, `${names.labels}.gz`);
  if (!existsSync(imagesFile) || !existsSync(labelsFile)) {
    const missing = [imagesFile, labelsFile].filter((f) => !existsSync(f));
    throw new DataFileError(missing.join(', '), `file not found (missing file): ${split} split needs ${names.images}[.gz] and ${names.labels}[.gz] in ${dir}`);
  }
  const [images, labels] = await Promise.all([
    readIdxImages(imagesFile, { rows: IMAGE_ROWS, cols: IMAGE_COLS }),
    readIdxLabels(labelsFile, { numClasses: NUM_CLASSES }),
  ]);
  checkSameCount(images, labels);

  const warnings: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
    opts.onWarning?.(m);
  };
  let verified: boolean | undefined;
  if (opts.verify ?? true) {
    verified = true;
    for (const [file, base, content] of [
      [imagesFile, names.images, images.content],
      [labelsFile, names.labels, labels.content],
    ] as const) {
      const got = sha256(content);
      if (got !== KNOWN_SHA256[base]) {
        verified = false;
        warn(
          `${file}: SHA-256 of the IDX content is ${got}, not the known Fashion-MNIST ${base} sum ` +
            `${KNOWN_SHA256[base]}; using it anyway (a subset or different data?)`,
        );
      }
    }
  }

  const total = images.count;
  const n = opts.limit === undefined ? total : Math.min(opts.limit, total);
  const dim = images.rows * images.cols;
  // All samples: a view of the decompressed file (16 header bytes more); a limit: a copy of the
  // first n, so that the rest of the file can be freed.
  const pixels = n === total ? images.pixels : images.pixels.slice(0, n * dim);
  const y = labels.labels.slice(0, n);
  return {
    split,
    pixels,
    table: pixelTable(opts.normalization ?? 'standard'),
    y,
    n,
    dim,
    rows: images.rows,
    cols: images.cols,
    numClasses: NUM_CLASSES,
    dir,
    source,
    files: { images: imagesFile, labels: labelsFile },
    totalInFile: total,
    verified,
    warnings,
  };
}

export interface LoadOptions extends Omit<LoadSplitOptions, 'limit'> {
  /** First N training samples only. */
  limitTrain?: number;
  /** First N test samples only. */
  limitTest?: number;
}

export interface FashionMnist {
  train: LoadedSplit;
  test: LoadedSplit;
  dir: string;
  source: DataSource;
  warnings: string[];
}

/** Loads both splits from one resolved directory. */
export async function loadFashionMnist(opts: LoadOptions = {}): Promise<FashionMnist> {
  checkLimit(opts.limitTrain);
  checkLimit(opts.limitTest);
  const { dir, source } = resolveDataDir(opts);
  const [train, test] = await Promise.all([
    loadSplitFrom('train', dir, source, { ...opts, limit: opts.limitTrain }),
    loadSplitFrom('test', dir, source, { ...opts, limit: opts.limitTest }),
  ]);
  return { train, test, dir, source, warnings: [...train.warnings, ...test.warnings] };
}

/** One line for logs, e.g. "Fashion-MNIST from /usr/share/... (system): 60000 train, 10000 test". */
export function describeData(d: FashionMnist): string {
  const part = (s: LoadedSplit): string => (s.n === s.totalInFile ? `${s.n} ${s.split}` : `${s.n}/${s.totalInFile} ${s.split}`);
  const check = d.train.verified === false || d.test.verified === false ? ', checksum mismatch' : '';
  return `Fashion-MNIST from ${d.dir} (${d.source}): ${part(d.train)}, ${part(d.test)}${check}`;
}
