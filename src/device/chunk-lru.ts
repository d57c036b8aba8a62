/** Decoded chunks kept in memory, bounded by bytes, least recently used evicted first. */
export class ChunkLru {
  private readonly entries = new Map<string, Uint8Array>();
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  get(id: string): Uint8Array | undefined {
    const data = this.entries.get(id);
    if (data) {
      // Map keeps insertion order: re-insert to mark as most recently used.
      this.entries.delete(id);
      this.entries.set(id, data);
    }
    return data;
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }

  set(id: string, data: Uint8Array): void {
    if (data.length > this.maxBytes) return;
    const old = this.entries.get(id);
    if (old) {
      this.bytes -= old.length;
      this.entries.delete(id);
    }
    this.entries.set(id, data);
    this.bytes += data.length;
    for (const [key, value] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(key);
      this.bytes -= value.length;
    }
  }
}
