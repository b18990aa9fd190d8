/** A float32 array's bits as int32, in place: the branch-free kernels compare and mask these. */
export function float32Bits(a: Float32Array, n: number): Int32Array {
  return new Int32Array(a.buffer, a.byteOffset, n);
}
