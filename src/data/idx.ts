/**
 * Reader for IDX files (the format of MNIST / Fashion-MNIST), gzip-compressed or raw.
 *
 * Layout: magic = two zero bytes, a type code (0x08 = unsigned byte, the only one supported here)
 * and the number of dimensions d; then d big-endian uint32 sizes; then the row-major payload of
 * prod(sizes) bytes. Compression is detected from the gzip magic 1f 8b, never from the file name.
 *
 * Every check throws a DataFileError whose message names the file and the exact problem.
 */
import { readFile } from 'node:fs/promises';
import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';

const gunzipAsync = promisify(gunzip);

/** A data file is missing, unreadable or malformed. `file` is the offending path (or paths). */
export class DataFileError extends Error {
  readonly file: string;
  readonly problem: string;

  constructor(file: string, problem: string) {
    super(`${file}: ${problem}`);
    this.name = 'DataFileError';
    this.file = file;
    this.problem = problem;
  }
}

/** Type code of unsigned-byte IDX payloads. */
export const IDX_UBYTE = 0x08;

const IDX_TYPE_NAMES: Record<number, string> = {
  8: 'unsigned byte',
  9: 'signed byte',
  11: 'int16',
  12: 'int32',
  13: 'float32',
  14: 'float64',
};

export interface IdxArray {
  /** Path it was read from. */
  file: string;
  /** Whether the file was gzip-compressed. */
  gzip: boolean;
  /** Sizes from the header, e.g. [60000, 28, 28]. */
  dims: number[];
  /** Row-major payload, exactly prod(dims) bytes (a view into the decompressed file). */
  data: Uint8Array;
  /** The whole decompressed IDX file (header + payload), e.g. for checksums. */
  content: Uint8Array;
}

export interface ReadIdxOptions {
  /** Required number of dimensions (3 for images, 1 for labels). */
  expectDims?: number;
  /** What the file should hold, used in messages ("images", "labels"). */
  kind?: string;
}

function isGzip(b: Uint8Array): boolean {
  return b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;
}

function hex(b: number): string {
  return `0x${b.toString(16).padStart(2, '0')}`;
}

function hexBytes(b: Uint8Array, n: number): string {
  return Array.from(b.subarray(0, n), (v) => v.toString(16).padStart(2, '0')).join(' ');
}

/** Reads a file's bytes, turning "not found" etc. into DataFileError. */
async function readBytes(file: string): Promise<Uint8Array> {
  try {
    const buf = await readFile(file);
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new DataFileError(file, 'file not found (missing file)');
    if (err.code === 'EISDIR') throw new DataFileError(file, 'is a directory, expected an IDX file');
    if (err.code === 'EACCES') throw new DataFileError(file, 'permission denied');
    throw new DataFileError(file, `cannot read file: ${err.message}`);
  }
}

/** Decompresses if gzip (by magic); returns the IDX bytes. */
async function decode(file: string, raw: Uint8Array): Promise<{ bytes: Uint8Array; gzip: boolean }> {
  if (raw.length === 0) {
    throw new DataFileError(file, 'empty file (0 bytes): not gzip and not IDX');
  }
  if (!isGzip(raw)) return { bytes: raw, gzip: false };
  let out: Buffer;
  try {
    out = await gunzipAsync(raw);
  } catch (e) {
    const msg = (e as Error).message;
    const hint = /unexpected end/i.test(msg) ? ' (the gzip stream is truncated)' : '';
    throw new DataFileError(file, `corrupt gzip data: ${msg}${hint}`);
  }
  return { bytes: new Uint8Array(out.buffer, out.byteOffset, out.byteLength), gzip: true };
}

/**
 * Parses IDX bytes (already decompressed). `gzip` only changes the wording of messages:
 * a raw file that does not start like IDX is reported as "not gzip and not IDX".
 */
export function parseIdx(file: string, bytes: Uint8Array, opts: ReadIdxOptions & { gzip?: boolean } = {}): { dims: number[]; data: Uint8Array } {
  const what = opts.kind ? `${opts.kind} ` : '';
  const where = opts.gzip ? 'decompressed data' : 'file';
  if (bytes.length === 0) {
    throw new DataFileError(file, `${where} is empty (0 bytes), no IDX header`);
  }
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0) {
    const got = hexBytes(bytes, 4);
    if (opts.gzip) {
      throw new DataFileError(file, `bad IDX magic in decompressed data: got bytes [${got}], expected 00 00 <type> <dims>`);
    }
    throw new DataFileError(file, `not gzip (no 1f 8b magic) and not IDX (bad magic: got bytes [${got}], expected 00 00 <type> <dims>)`);
  }
  const type = bytes[2];
  if (type !== IDX_UBYTE) {
    const name = IDX_TYPE_NAMES[type] ? ` (${IDX_TYPE_NAMES[type]})` : ' (not a valid IDX type)';
    throw new DataFileError(file, `unsupported IDX type code ${hex(type)}${name}; only ${hex(IDX_UBYTE)} (unsigned byte) is supported`);
  }
  const ndims = bytes[3];
  if (ndims === 0) {
    throw new DataFileError(file, 'bad IDX header: number of dimensions is 0');
  }
  if (opts.expectDims !== undefined && ndims !== opts.expectDims) {
    throw new DataFileError(file, `wrong number of dimensions for ${what}file: header says ${ndims}, expected ${opts.expectDims}`);
  }
  const headerLen = 4 + 4 * ndims;
  if (bytes.length < headerLen) {
    throw new DataFileError(file, `truncated IDX header: ${ndims} dimensions need ${headerLen} header bytes, ${where} has only ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  let expected = 1;
  for (let i = 0; i < ndims; i++) {
    const d = view.getUint32(4 + 4 * i, false);
    dims.push(d);
    expected *= d;
  }
  const actual = bytes.length - headerLen;
  const shape = dims.join('×');
  if (actual < expected) {
    throw new DataFileError(
      file,
      `truncated payload: header [${shape}] needs ${expected} bytes after the ${headerLen}-byte header, ` +
        `but only ${actual} bytes are present (${expected - actual} missing)`,
    );
  }
  if (actual > expected) {
    throw new DataFileError(
      file,
      `payload longer than the header says: header [${shape}] needs ${expected} bytes after the ` +
        `${headerLen}-byte header, but ${actual} bytes are present (${actual - expected} extra)`,
    );
  }
  return { dims, data: bytes.subarray(headerLen) };
}

/** Reads and validates one IDX file (gzip or raw). */
export async function readIdx(file: string, opts: ReadIdxOptions = {}): Promise<IdxArray> {
  const raw = await readBytes(file);
  const { bytes, gzip } = await decode(file, raw);
  const { dims, data } = parseIdx(file, bytes, { ...opts, gzip });
  return { file, gzip, dims, data, content: bytes };
}

export interface IdxImages {
  file: string;
  gzip: boolean;
  count: number;
  rows: number;
  cols: number;
  /** count × rows × cols bytes. */
  pixels: Uint8Array;
  /** The whole decompressed IDX file (header + payload). */
  content: Uint8Array;
}

/** Reads an image file (3 dimensions: count, rows, cols), optionally requiring rows×cols. */
export async function readIdxImages(file: string, opts: { rows?: number; cols?: number } = {}): Promise<IdxImages> {
  const a = await readIdx(file, { expectDims: 3, kind: 'images' });
  const [count, rows, cols] = a.dims;
  if ((opts.rows !== undefined && rows !== opts.rows) || (opts.cols !== undefined && cols !== opts.cols)) {
    throw new DataFileError(file, `image size is ${rows}×${cols}, expected ${opts.rows ?? rows}×${opts.cols ?? cols}`);
  }
  return { file, gzip: a.gzip, count, rows, cols, pixels: a.data, content: a.content };
}

export interface IdxLabels {
  file: string;
  gzip: boolean;
  count: number;
  labels: Uint8Array;
  /** The whole decompressed IDX file (header + payload). */
  content: Uint8Array;
}

/** Reads a label file (1 dimension) and checks every label is in 0..numClasses-1. */
export async function readIdxLabels(file: string, opts: { numClasses?: number } = {}): Promise<IdxLabels> {
  const numClasses = opts.numClasses ?? 10;
  const a = await readIdx(file, { expectDims: 1, kind: 'labels' });
  const labels = a.data;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] >= numClasses) {
      throw new DataFileError(file, `label value ${labels[i]} at index ${i} is out of range 0..${numClasses - 1} (first bad label)`);
    }
  }
  return { file, gzip: a.gzip, count: a.dims[0], labels, content: a.content };
}

/** Throws if the image and label files of a split disagree on the number of samples. */
export function checkSameCount(images: { file: string; count: number }, labels: { file: string; count: number }): void {
  if (images.count !== labels.count) {
    throw new DataFileError(
      `${images.file}, ${labels.file}`,
      `image/label count mismatch: ${images.count} images in ${images.file} but ${labels.count} labels in ${labels.file}`,
    );
  }
}
