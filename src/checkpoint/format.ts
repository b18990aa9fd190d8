/**
 * The checkpoint file: a JSON header and raw little-endian float32 tensors, sealed with a SHA-256
 * of everything before it, written atomically (temporary file, fsync, rename). A truncated or
 * corrupted file is detected at load, and the newest good checkpoint of a directory is used.
 *
 *   "SPNGDCK1" | u32 header length | header JSON | tensor bytes | 32-byte SHA-256
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicAsync } from '../util/atomic-file.js';

const MAGIC = Buffer.from('SPNGDCK1', 'ascii');

export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointError';
  }
}

export interface CheckpointContents<H> {
  /** Anything JSON (step, schedules, versions...). */
  header: H;
  /** Named float arrays, stored in their own precision. */
  tensors: Map<string, Float32Array | Float64Array>;
}

interface TensorEntry {
  name: string;
  dtype: 'f32' | 'f64';
  offset: number;
  length: number;
}

export function encodeCheckpoint<H>(c: CheckpointContents<H>): Buffer {
  const entries: TensorEntry[] = [];
  let offset = 0;
  for (const [name, t] of c.tensors) {
    entries.push({ name, dtype: t instanceof Float64Array ? 'f64' : 'f32', offset, length: t.length });
    offset += t.byteLength;
  }
  const header = Buffer.from(JSON.stringify({ header: c.header, tensors: entries }), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length, 0);
  const parts: Buffer[] = [MAGIC, len, header];
  for (const t of c.tensors.values()) parts.push(Buffer.from(t.buffer, t.byteOffset, t.byteLength));
  const body = Buffer.concat(parts);
  const digest = createHash('sha256').update(body).digest();
  return Buffer.concat([body, digest]);
}

export function decodeCheckpoint<H>(file: string, bytes: Buffer): CheckpointContents<H> {
  if (bytes.length < MAGIC.length + 4 + 32 || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new CheckpointError(`${file}: not a spngd checkpoint (bad magic or too short: ${bytes.length} bytes)`);
  }
  const body = bytes.subarray(0, bytes.length - 32);
  const digest = createHash('sha256').update(body).digest();
  if (!digest.equals(bytes.subarray(bytes.length - 32))) {
    throw new CheckpointError(`${file}: checksum mismatch (the file is truncated or corrupted)`);
  }
  const hlen = bytes.readUInt32LE(MAGIC.length);
  const hstart = MAGIC.length + 4;
  if (hstart + hlen > body.length) throw new CheckpointError(`${file}: header runs past the end of the file`);
  const parsed = JSON.parse(body.subarray(hstart, hstart + hlen).toString('utf8')) as { header: H; tensors: TensorEntry[] };
  const dataStart = hstart + hlen;
  const tensors = new Map<string, Float32Array | Float64Array>();
  for (const e of parsed.tensors) {
    const start = dataStart + e.offset;
    const t = e.dtype === 'f64' ? new Float64Array(e.length) : new Float32Array(e.length);
    const end = start + t.byteLength;
    if (end > body.length) throw new CheckpointError(`${file}: tensor ${e.name} runs past the end of the file`);
    // Copy: the file buffer's offset need not be aligned.
    new Uint8Array(t.buffer).set(body.subarray(start, end));
    tensors.set(e.name, t);
  }
  return { header: parsed.header, tensors };
}

const namePattern = /^checkpoint-(\d{8})\.spngd$/;

export function checkpointName(step: number): string {
  return `checkpoint-${String(step).padStart(8, '0')}.spngd`;
}

/** The first tensor of `c` holding a NaN or an infinity, with the count of such values (undefined: all finite). */
export function firstNonFinite(c: Pick<CheckpointContents<unknown>, 'tensors'>): { name: string; count: number } | undefined {
  for (const [name, t] of c.tensors) {
    let count = 0;
    for (let i = 0; i < t.length; i++) if (!Number.isFinite(t[i])) count++;
    if (count > 0) return { name, count };
  }
  return undefined;
}

/** A checkpoint that was not written because its parameters (or momentum, or curvature) are not finite. */
export class NonFiniteCheckpointError extends CheckpointError {
  constructor(message: string) {
    super(message);
    this.name = 'NonFiniteCheckpointError';
  }
}

/**
 * Writes a checkpoint for `step` into `dir` atomically and keeps the newest `keep` of them. Only
 * finite state is written: a tensor with a NaN or an infinity throws NonFiniteCheckpointError and
 * the directory is left as it was (the good checkpoints stay the newest). The contents are encoded
 * before the first await, so the caller may change its state while the file is written.
 */
export async function saveCheckpoint<H>(dir: string, step: number, c: CheckpointContents<H>, keep = 3): Promise<string> {
  const bad = firstNonFinite(c);
  if (bad) throw new NonFiniteCheckpointError(`the state of step ${step} is not finite (${bad.name} has ${bad.count} NaN or infinite value(s))`);
  const file = join(dir, checkpointName(step));
  await writeFileAtomicAsync(file, encodeCheckpoint(c));
  const all = listCheckpoints(dir);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) {
    try {
      unlinkSync(join(dir, old));
    } catch {
      /* kept: removed next time */
    }
  }
  return file;
}

/** Checkpoint file names in `dir`, oldest first. */
export function listCheckpoints(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => namePattern.test(n)).sort();
}

/**
 * The newest checkpoint of `dir` that loads and whose tensors are all finite; corrupted ones and
 * ones holding NaN or infinities (written by an older version) are reported through `onBad` and
 * skipped in favour of the previous one. Undefined when there is none.
 */
export function loadLatestCheckpoint<H>(
  dir: string,
  onBad: (file: string, why: string) => void,
): { file: string; contents: CheckpointContents<H> } | undefined {
  for (const name of listCheckpoints(dir).reverse()) {
    const file = join(dir, name);
    try {
      const contents = decodeCheckpoint<H>(file, readFileSync(file));
      const bad = firstNonFinite(contents);
      if (bad) throw new CheckpointError(`its parameters are not finite (${bad.name} has ${bad.count} NaN or infinite value(s))`);
      return { file, contents };
    } catch (err) {
      onBad(file, (err as Error).message);
    }
  }
  return undefined;
}
