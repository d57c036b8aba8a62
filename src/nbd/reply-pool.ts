/**
 * Reply buffers (16-byte header + read payload) reused once the socket has
 * written them. A guest repeats the same few read sizes; a fresh 256 KiB
 * buffer per reply costs an allocation, external-memory accounting and GC
 * work (measured: a sixth of the server's CPU time on sequential reads).
 *
 * One pool per connection (a connection reads from one export only), bounded
 * in bytes: what a pool keeps is at most what was in flight at once.
 */
export class ReplyBufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private pooledBytes = 0;

  constructor(private readonly maxBytes: number) {}

  take(size: number): Buffer {
    const buffer = this.free.get(size)?.pop();
    if (buffer) {
      this.pooledBytes -= size;
      return buffer;
    }
    // Slow: a buffer of its own, never a slice of Node's shared pool slab.
    return Buffer.allocUnsafeSlow(size);
  }

  /** Hand back a buffer nothing refers to any more (its write completed or failed). */
  give(buffer: Buffer): void {
    if (this.pooledBytes + buffer.length > this.maxBytes) return;
    let list = this.free.get(buffer.length);
    if (!list) this.free.set(buffer.length, (list = []));
    list.push(buffer);
    this.pooledBytes += buffer.length;
  }

  get bytes(): number {
    return this.pooledBytes;
  }
}
