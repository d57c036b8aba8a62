import { open, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../store/node/dir-transport.js';
import type { BlockDevice } from '../block-device.js';
import { BlockDeviceError } from '../errors.js';
import { COW_GRANULARITY, CowOverlay, type OverlayMedium } from '../cow-overlay.js';

const MAP_MAGIC = 'HMCOW001';
const MAP_HEADER = 24;

/** Open (or create) a copy-on-write overlay kept in the files `overlay.data` and `overlay.map` of `dir`. */
export async function openFileOverlay(base: BlockDevice, dir: string): Promise<CowOverlay> {
  const mapPath = join(dir, 'overlay.map');
  const blocks = Math.ceil(base.size / COW_GRANULARITY);
  const bitmap = await loadBitmap(mapPath, base.size, blocks);
  const data = await open(join(dir, 'overlay.data'), 'a+').then(async (h) => {
    await h.close();
    return open(join(dir, 'overlay.data'), 'r+');
  });
  await data.truncate(base.size);
  return new CowOverlay(base, new FileMedium(data, mapPath, base.size), bitmap);
}

/** A sparse data file at the device's offsets, and the bitmap replaced atomically after the data was synced. */
class FileMedium implements OverlayMedium {
  constructor(
    private readonly data: FileHandle,
    private readonly mapPath: string,
    private readonly size: number,
  ) {}

  async read(into: Uint8Array, at: number, length: number, offset: number): Promise<void> {
    await this.data.read(into, at, length, offset).catch(toBlockError('read the overlay'));
  }

  async write(data: Uint8Array, offset: number): Promise<void> {
    await this.data.write(data, 0, data.length, offset).catch(toBlockError('write the overlay'));
  }

  async persist(bitmap: Uint8Array, dirty: boolean): Promise<void> {
    await this.data.datasync().catch(toBlockError('sync the overlay'));
    if (!dirty) return;
    await writeFileAtomic(this.mapPath, encodeMap(this.size, bitmap)).catch(toBlockError('save the overlay map'));
  }

  async close(): Promise<void> {
    await this.data.close();
  }
}

function toBlockError(action: string) {
  return (err: NodeJS.ErrnoException): never => {
    const errno = err.code === 'ENOSPC' || err.code === 'EDQUOT' || err.code === 'store-full' ? 'ENOSPC' : 'EIO';
    throw new BlockDeviceError(errno, `cannot ${action}: ${err.message}`, { errnoCode: err.code }, { cause: err });
  };
}

function encodeMap(size: number, bitmap: Uint8Array): Uint8Array {
  const out = new Uint8Array(MAP_HEADER + bitmap.length);
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode(MAP_MAGIC), 0);
  view.setUint32(8, COW_GRANULARITY, true);
  view.setUint32(12, 0, true);
  view.setBigUint64(16, BigInt(size), true);
  out.set(bitmap, MAP_HEADER);
  return out;
}

async function loadBitmap(mapPath: string, size: number, blocks: number): Promise<Uint8Array> {
  const bytes = await readFile(mapPath).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  const bitmap = new Uint8Array(Math.ceil(blocks / 8));
  if (!bytes) return bitmap;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const valid =
    bytes.length === MAP_HEADER + bitmap.length &&
    new TextDecoder().decode(bytes.subarray(0, 8)) === MAP_MAGIC &&
    view.getUint32(8, true) === COW_GRANULARITY &&
    Number(view.getBigUint64(16, true)) === size;
  if (!valid) {
    throw new BlockDeviceError('EIO', `${mapPath}: overlay map is corrupt or belongs to a disk of another size; run "hostme reset" to discard the overlay`, { mapPath });
  }
  bitmap.set(bytes.subarray(MAP_HEADER));
  return bitmap;
}
