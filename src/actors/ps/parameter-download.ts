/** DownloadParameters: the PS's current parameters (or some of them) for whoever asks. */
import { status, type ServerWritableStream } from '@grpc/grpc-js';
import type { DownloadParametersRequest, DownloadParametersResponse } from '../../gen/spngd/v1/parameter_server.js';
import type { Sequential } from '../../nn/sequential.js';
import { failServerCall, TransportError } from '../../transport/errors.js';
import { ByteBudgetWriter } from '../../transport/flow.js';
import { sendDense } from '../common/tensor-io.js';

/** Streams the parameters of version `step` unless the caller has them already (`newer_than_version`). */
export async function serveParameters(
  call: ServerWritableStream<DownloadParametersRequest, DownloadParametersResponse>,
  model: Sequential,
  step: number,
  chunkBytesLimit: number,
  /** The tensors this PS holds (a PS shard holds some layers only). */
  holds: (name: string) => boolean = () => true,
): Promise<void> {
  try {
    const wanted = new Set(call.request.names);
    if (call.request.newerThanVersion > 0 && step <= call.request.newerThanVersion) {
      call.end();
      return;
    }
    // A consistent snapshot: copies taken before the first await.
    const entries = model.stateEntries().filter((e) => holds(e.name) && (wanted.size === 0 || wanted.has(e.name)));
    const unknown = [...wanted].filter((n) => !entries.some((e) => e.name === n));
    if (unknown.length > 0) throw new TransportError(status.NOT_FOUND, 'bad_argument', `unknown parameter(s): ${unknown.join(', ')}`);
    const snapshot = entries.map((e) => ({ name: e.name, shape: e.value.shape, values: new Float32Array(e.value.data) }));
    const writer = new ByteBudgetWriter(call);
    const chunkBytes = call.request.maxMessageBytes > 0 ? Math.max(4096, Math.min(chunkBytesLimit, call.request.maxMessageBytes - 4096) & ~3) : chunkBytesLimit;
    for (const e of snapshot) {
      await sendDense(writer, (tensor) => ({ step, tensorCount: snapshot.length, tensor }), e.name, e.values, e.shape, step, chunkBytes, { copy: false });
    }
    await writer.end();
  } catch (err) {
    failServerCall(call, err);
  }
}
