/**
 * Fast (de)serializers for the messages that carry a TensorChunk, byte-compatible with the
 * generated ts-proto code.
 *
 * The generated serializers copy a chunk's data into the writer's buffer, shift it once per nesting
 * level (`join()` widens the length prefix with a memmove), and copy it again in `finish()` and in
 * `Buffer.from`; the generated decoder copies it out of the received buffer
 * (`Buffer.from(reader.bytes())`). Here the envelope is still encoded and decoded by the
 * generated code, field by field, but the one large field, `TensorChunk.data`, is spliced:
 *
 * - Encoding: every level on the path to the tensor (e.g. TrainRequest -> GradientChunk ->
 *   TensorChunk) is encoded by ts-proto *without* its child (a few dozen bytes), the lengths are
 *   computed, and one buffer is allocated into which the small prefixes and the data are copied:
 *   one copy of the data. The child is the last field of every level (highest field number, and
 *   ts-proto writes fields in field-number order), so the output is byte-identical to the
 *   generated encoder's.
 * - Decoding: the path is located by scanning tags and lengths; each level's other fields are
 *   decoded by ts-proto and `data` becomes a view (`Buffer`) into the received buffer: no copy. The
 *   view may start at any offset (Float32Array needs a multiple of 4, so the consumer copies or, if
 *   aligned, views: see TensorAssembler / bytesToFloat32), and it keeps the received message buffer
 *   alive as long as it is referenced (the same size as the copy it replaces).
 *
 * Anything unexpected (no tensor on the path, a path field repeated or followed by other fields,
 * another member of the same oneof, groups, malformed or truncated input) falls back to the
 * generated code for the whole message, so the result, or the error, is always the generated
 * code's (test/transport-fast-codec.test.ts checks this on fuzzed input).
 */
import type { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';

import { FetchLayerStateResponse, PushStatisticsRequest, StatisticChunk } from '../gen/spngd/v1/factor_owner.js';
import {
  DownloadParametersResponse,
  GradientChunk,
  ParameterChunk,
  PreconditionerChunk,
  PublishPreconditionersRequest,
  TrainRequest,
  TrainResponse,
} from '../gen/spngd/v1/parameter_server.js';
import { TensorChunk } from '../gen/spngd/v1/tensor.js';

/** The parts of a generated message codec used here. */
interface Codec<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter;
  decode(input: BinaryReader | Uint8Array, length?: number): T;
}

/** One level on the path from an envelope to its TensorChunk. */
interface Hop {
  /** Codec of the message at this level. */
  readonly codec: Codec<any>;
  /** Field number of the child (the next level, or the TensorChunk) in this message. */
  readonly field: number;
  /**
   * The child is a member of a oneof: when decoding, no other field may be present (another
   * member after it would win), otherwise the generated decoder handles the message.
   */
  readonly oneof: boolean;
  /** The child of `msg` if `msg` takes this route, else undefined. */
  child(msg: any): unknown;
  /** `msg` without the child (its other fields), for encoding the prefix. */
  without(msg: any): any;
  /** Sets the decoded child into the decoded message of this level. */
  attach(msg: any, child: unknown): void;
  /** The child field holding an empty message (see decodePath). */
  readonly canary: Uint8Array;
}

/** A route from an envelope type to the TensorChunk it carries: the hops, outermost first. */
export interface TensorRoute<T> {
  readonly name: string;
  readonly hops: readonly Hop[];
  /** The generated codec of the envelope (fallback). */
  readonly codec: Codec<T>;
}

/** Field number of `TensorChunk.data`. */
const DATA_FIELD = 9;
const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

const EMPTY = Buffer.alloc(0);

// ---------------------------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------------------------

/** A hop into a oneof member `kind` with case `$case` at field `field`. */
function oneofHop(codec: Codec<any>, field: number, $case: string): Hop {
  return {
    codec,
    field,
    oneof: true,
    canary: hopCanary(field),
    child: (m) => (m.kind?.$case === $case ? m.kind.value : undefined),
    without: (m) => ({ ...m, kind: undefined }),
    attach: (m, c) => {
      m.kind = { $case, value: c };
    },
  };
}

/** A hop into the plain message field `tensor` at field `field`. */
function tensorHop(codec: Codec<any>, field: number): Hop {
  return {
    codec,
    field,
    oneof: false,
    canary: hopCanary(field),
    child: (m) => m.tensor ?? undefined,
    without: (m) => ({ ...m, tensor: undefined }),
    attach: (m, c) => {
      m.tensor = c;
    },
  };
}

function route<T>(name: string, codec: Codec<T>, hops: Hop[]): TensorRoute<T> {
  return { name, codec, hops };
}

/** TrainRequest.gradient (2) -> GradientChunk.tensor (4). */
export const TRAIN_REQUEST_ROUTE = route('TrainRequest.gradient.tensor', TrainRequest, [oneofHop(TrainRequest, 2, 'gradient'), tensorHop(GradientChunk, 4)]);
/** TrainResponse.parameters (2) -> ParameterChunk.tensor (2). */
export const TRAIN_RESPONSE_ROUTE = route('TrainResponse.parameters.tensor', TrainResponse, [
  oneofHop(TrainResponse, 2, 'parameters'),
  tensorHop(ParameterChunk, 2),
]);
/** PublishPreconditionersRequest.chunk (2) -> PreconditionerChunk.tensor (5). */
export const PUBLISH_PRECONDITIONERS_REQUEST_ROUTE = route('PublishPreconditionersRequest.chunk.tensor', PublishPreconditionersRequest, [
  oneofHop(PublishPreconditionersRequest, 2, 'chunk'),
  tensorHop(PreconditionerChunk, 5),
]);
/** PushStatisticsRequest.statistic (2) -> StatisticChunk.tensor (6). */
export const PUSH_STATISTICS_REQUEST_ROUTE = route('PushStatisticsRequest.statistic.tensor', PushStatisticsRequest, [
  oneofHop(PushStatisticsRequest, 2, 'statistic'),
  tensorHop(StatisticChunk, 6),
]);
/** DownloadParametersResponse.tensor (3). */
export const DOWNLOAD_PARAMETERS_RESPONSE_ROUTE = route('DownloadParametersResponse.tensor', DownloadParametersResponse, [
  tensorHop(DownloadParametersResponse, 3),
]);
/** FetchLayerStateResponse.tensor (2). */
export const FETCH_LAYER_STATE_RESPONSE_ROUTE = route('FetchLayerStateResponse.tensor', FetchLayerStateResponse, [tensorHop(FetchLayerStateResponse, 2)]);

// ---------------------------------------------------------------------------------------------
// Varints
// ---------------------------------------------------------------------------------------------

/** Bytes of the varint encoding of a non-negative integer below 2^53. */
export function varintSize(n: number): number {
  if (n < 0x80) return 1;
  if (n < 0x4000) return 2;
  if (n < 0x200000) return 3;
  if (n < 0x10000000) return 4;
  let size = 4;
  let rest = Math.floor(n / 0x10000000);
  while (rest > 0) {
    size++;
    rest = Math.floor(rest / 0x80);
  }
  return size;
}

/** Writes a non-negative integer below 2^53 as a varint at `pos`; returns the position after it. */
function writeVarint(out: Uint8Array, pos: number, n: number): number {
  while (n >= 0x80) {
    out[pos++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  out[pos++] = n;
  return pos;
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/**
 * Encodes `msg` (an envelope of `r`'s type) into one Buffer with the chunk's data copied once.
 * Byte-identical to `Buffer.from(r.codec.encode(msg).finish())`. Messages that do not take the
 * route (e.g. a hello) are encoded by the generated code.
 *
 * The buffer is freshly allocated unless `alloc` is given, which must return a Buffer of exactly
 * the requested size (e.g. a view of a reused scratch buffer: see fast-services.ts for when that is
 * safe).
 */
export function encodeSpliced<T>(r: TensorRoute<T>, msg: T, alloc?: (bytes: number) => Buffer): Buffer {
  const hops = r.hops;
  const n = hops.length;
  // Prefixes of the levels (each level's fields other than its child), outermost first, then the
  // tensor's header (all fields but data).
  const prefixes: Uint8Array[] = new Array(n + 1);
  let node: any = msg;
  for (let i = 0; i < n; i++) {
    const child = hops[i].child(node);
    if (child === undefined || child === null) return Buffer.from(r.codec.encode(msg).finish());
    prefixes[i] = hops[i].codec.encode(hops[i].without(node)).finish();
    node = child;
  }
  const tensor = node as TensorChunk;
  const data: Uint8Array = tensor.data ?? EMPTY;
  prefixes[n] = TensorChunk.encode({ ...tensor, data: EMPTY }).finish();

  // Lengths, innermost first: the tensor message, then each enclosing level.
  const dataTag = (DATA_FIELD << 3) | WIRE_LEN;
  const lengths: number[] = new Array(n + 1);
  let len = prefixes[n].byteLength + (data.byteLength > 0 ? varintSize(dataTag) + varintSize(data.byteLength) + data.byteLength : 0);
  lengths[n] = len;
  for (let i = n - 1; i >= 0; i--) {
    const tag = (hops[i].field << 3) | WIRE_LEN;
    len = prefixes[i].byteLength + varintSize(tag) + varintSize(len) + len;
    lengths[i] = len;
  }

  const out = alloc !== undefined ? alloc(lengths[0]) : Buffer.allocUnsafe(lengths[0]);
  if (out.byteLength !== lengths[0]) throw new Error(`encodeSpliced(${r.name}): alloc returned ${out.byteLength} bytes, not ${lengths[0]}`);
  let pos = 0;
  for (let i = 0; i < n; i++) {
    out.set(prefixes[i], pos);
    pos += prefixes[i].byteLength;
    pos = writeVarint(out, pos, (hops[i].field << 3) | WIRE_LEN);
    pos = writeVarint(out, pos, lengths[i + 1]);
  }
  out.set(prefixes[n], pos);
  pos += prefixes[n].byteLength;
  if (data.byteLength > 0) {
    pos = writeVarint(out, pos, dataTag);
    pos = writeVarint(out, pos, data.byteLength);
    out.set(data, pos);
    pos += data.byteLength;
  }
  if (pos !== out.byteLength) throw new Error(`encodeSpliced(${r.name}): wrote ${pos} bytes, expected ${out.byteLength}`);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/** Thrown by the scanner for anything it does not handle; the caller falls back. */
const UNSUPPORTED = Symbol('unsupported');

/** Reads a varint at `p.pos` (below 2^53, at most 10 bytes) and advances. */
function readVarint(buf: Uint8Array, p: { pos: number }, end: number): number {
  let result = 0;
  let mul = 1;
  for (let i = 0; i < 10; i++) {
    if (p.pos >= end) throw UNSUPPORTED;
    const b = buf[p.pos++];
    result += (b & 0x7f) * mul;
    if (b < 0x80) {
      if (result > Number.MAX_SAFE_INTEGER) throw UNSUPPORTED;
      return result;
    }
    mul *= 0x80;
  }
  throw UNSUPPORTED;
}

/** Where the child field sits in a level's bytes. */
interface Found {
  /** Start of the child field (its tag). */
  fieldStart: number;
  /** Start and end of the child's payload. */
  start: number;
  end: number;
  /** Another field (other than the child) is present. */
  others: boolean;
}

/**
 * Scans the fields of the message in buf[start, end) for exactly one length-delimited field
 * `field`. Returns undefined if it is absent or repeated; throws UNSUPPORTED on groups, tag 0 or
 * malformed input.
 */
function findField(buf: Uint8Array, start: number, end: number, field: number): Found | undefined {
  const p = { pos: start };
  let found: Found | undefined;
  let count = 0;
  let others = false;
  while (p.pos < end) {
    const fieldStart = p.pos;
    const tag = readVarint(buf, p, end);
    // The generated decoder reads tags as uint32 (truncating): leave anything larger to it.
    if (tag > 0xffffffff) throw UNSUPPORTED;
    const number = Math.floor(tag / 8);
    const wire = tag % 8;
    if (number === 0) throw UNSUPPORTED;
    switch (wire) {
      case WIRE_VARINT:
        readVarint(buf, p, end);
        others = true;
        break;
      case WIRE_I64:
        p.pos += 8;
        others = true;
        break;
      case WIRE_I32:
        p.pos += 4;
        others = true;
        break;
      case WIRE_LEN: {
        const len = readVarint(buf, p, end);
        if (len > 0x7fffffff) throw UNSUPPORTED;
        const s = p.pos;
        p.pos += len;
        if (p.pos > end) throw UNSUPPORTED;
        if (number === field) {
          count++;
          found = { fieldStart, start: s, end: p.pos, others: false };
        } else {
          others = true;
        }
        break;
      }
      default:
        throw UNSUPPORTED; // groups (3, 4) and invalid wire types
    }
    if (p.pos > end) throw UNSUPPORTED;
  }
  if (count !== 1 || found === undefined) return undefined;
  found.others = others;
  return found;
}

/**
 * Decodes an envelope of `r`'s type, with the chunk's data as a view into `buf` (no copy).
 * Equivalent to `r.codec.decode(buf)`, which it falls back to for anything unexpected, except that
 * `tensor.data` shares memory with `buf`.
 */
export function decodeSpliced<T>(r: TensorRoute<T>, buf: Uint8Array): T {
  let decoded: T | undefined;
  try {
    decoded = decodePath(r, buf);
  } catch {
    // Malformed somewhere (or UNSUPPORTED): the generated decoder gives the answer, or the error.
    decoded = undefined;
  }
  return decoded ?? r.codec.decode(buf);
}

/** `bytes` followed by `canary`, in a new array. */
function withCanary(bytes: Uint8Array, canary: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.byteLength + canary.byteLength);
  out.set(bytes, 0);
  out.set(canary, bytes.byteLength);
  return out;
}

/** The path field with an empty message: decodes to a present (default) child. */
function hopCanary(field: number): Uint8Array {
  const tag = (field << 3) | WIRE_LEN;
  const out = new Uint8Array(varintSize(tag) + 1);
  writeVarint(out, 0, tag);
  return out;
}

/** TensorChunk.data = [0xab]. */
const DATA_CANARY = new Uint8Array([(DATA_FIELD << 3) | WIRE_LEN, 1, 0xab]);

/**
 * The fast path. Taken only when, at every level, the path field occurs once and is the last field
 * of its level (as every protobuf encoder writes it, the child having the highest field number).
 * Each level's other fields, the bytes before the path field, are decoded by ts-proto followed by a
 * canary: the path field with a recognizable value. Finding the canary in the result proves that
 * ts-proto's parse of those bytes read nothing past them and stopped exactly at the path field, as
 * it does when it decodes the whole buffer, so the results agree (the canary is then replaced by
 * the real child). Otherwise (a malformed field overrunning or stopping the parse early) the
 * caller falls back to the generated decoder.
 */
function decodePath<T>(r: TensorRoute<T>, buf: Uint8Array): T | undefined {
  const hops = r.hops;
  const levels: any[] = [];
  let start = 0;
  const end = buf.byteLength;
  for (let i = 0; i < hops.length; i++) {
    const hop = hops[i];
    const f = findField(buf, start, end, hop.field);
    if (f === undefined || f.end !== end || (hop.oneof && f.others)) return undefined;
    const level = hop.codec.decode(withCanary(buf.subarray(start, f.fieldStart), hop.canary));
    if (hop.child(level) === undefined) return undefined;
    levels.push(level);
    start = f.start;
  }
  // The TensorChunk: every field but data through ts-proto, data as a view.
  const d = findField(buf, start, end, DATA_FIELD);
  if (d === undefined || d.end !== end) return undefined;
  const tensor = TensorChunk.decode(withCanary(buf.subarray(start, d.fieldStart), DATA_CANARY));
  if (tensor.data.byteLength !== 1 || tensor.data[0] !== 0xab) return undefined;
  tensor.data = Buffer.from(buf.buffer, buf.byteOffset + d.start, d.end - d.start);
  let child: unknown = tensor;
  for (let i = hops.length - 1; i >= 0; i--) {
    hops[i].attach(levels[i], child);
    child = levels[i];
  }
  return child as T;
}

// ---------------------------------------------------------------------------------------------
// Per-envelope functions (the shapes grpc-js service definitions take)
// ---------------------------------------------------------------------------------------------

export const encodeTrainRequest = (m: TrainRequest): Buffer => encodeSpliced(TRAIN_REQUEST_ROUTE, m);
export const decodeTrainRequest = (b: Buffer): TrainRequest => decodeSpliced(TRAIN_REQUEST_ROUTE, b);
export const encodeTrainResponse = (m: TrainResponse): Buffer => encodeSpliced(TRAIN_RESPONSE_ROUTE, m);
export const decodeTrainResponse = (b: Buffer): TrainResponse => decodeSpliced(TRAIN_RESPONSE_ROUTE, b);
export const encodePublishPreconditionersRequest = (m: PublishPreconditionersRequest): Buffer => encodeSpliced(PUBLISH_PRECONDITIONERS_REQUEST_ROUTE, m);
export const decodePublishPreconditionersRequest = (b: Buffer): PublishPreconditionersRequest => decodeSpliced(PUBLISH_PRECONDITIONERS_REQUEST_ROUTE, b);
export const encodePushStatisticsRequest = (m: PushStatisticsRequest): Buffer => encodeSpliced(PUSH_STATISTICS_REQUEST_ROUTE, m);
export const decodePushStatisticsRequest = (b: Buffer): PushStatisticsRequest => decodeSpliced(PUSH_STATISTICS_REQUEST_ROUTE, b);
export const encodeDownloadParametersResponse = (m: DownloadParametersResponse): Buffer => encodeSpliced(DOWNLOAD_PARAMETERS_RESPONSE_ROUTE, m);
export const decodeDownloadParametersResponse = (b: Buffer): DownloadParametersResponse => decodeSpliced(DOWNLOAD_PARAMETERS_RESPONSE_ROUTE, b);
export const encodeFetchLayerStateResponse = (m: FetchLayerStateResponse): Buffer => encodeSpliced(FETCH_LAYER_STATE_RESPONSE_ROUTE, m);
export const decodeFetchLayerStateResponse = (b: Buffer): FetchLayerStateResponse => decodeSpliced(FETCH_LAYER_STATE_RESPONSE_ROUTE, b);
