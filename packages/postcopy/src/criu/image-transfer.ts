// The images directory (small: the lazy memory stays behind) from the source to the target, on a
// connection of its own: per file {u16 name length, name, u64 size, bytes}, then a zero length.
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { PostcopyError } from '../errors.js';
import { transportFor, type Endpoint, type Listener } from '../transport/index.js';

const MAX_FILE = 256 << 20;
const SAFE_NAME = /^[A-Za-z0-9._-]{1,200}$/;

/** Every regular file of the directory, as one buffer in the transfer format. */
export function packImages(dir: string): Buffer {
  const parts: Buffer[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (!statSync(path).isFile() || !SAFE_NAME.test(name)) continue; // sockets, fifos: local only
    const data = readFileSync(path);
    const head = Buffer.alloc(2 + Buffer.byteLength(name) + 8);
    head.writeUInt16LE(Buffer.byteLength(name), 0);
    head.write(name, 2);
    head.writeBigUInt64LE(BigInt(data.length), 2 + Buffer.byteLength(name));
    parts.push(head, data);
  }
  parts.push(Buffer.alloc(2));
  return Buffer.concat(parts);
}

/** Writes the files of a transfer into dir; returns their names. Throws ERR_IMAGE on a bad stream. */
export function unpackImages(stream: Buffer, dir: string): string[] {
  mkdirSync(dir, { recursive: true });
  const names: string[] = [];
  let o = 0;
  for (;;) {
    if (stream.length - o < 2) throw new PostcopyError('ERR_IMAGE', 'the images transfer ended early');
    const len = stream.readUInt16LE(o);
    o += 2;
    if (len === 0) break;
    if (stream.length - o < len + 8) throw new PostcopyError('ERR_IMAGE', 'the images transfer ended inside a file header');
    const name = stream.toString('utf8', o, o + len);
    o += len;
    const size = Number(stream.readBigUInt64LE(o));
    o += 8;
    if (!SAFE_NAME.test(name) || name === '.' || name === '..') throw new PostcopyError('ERR_IMAGE', `refusing image file name "${name}"`);
    if (size > MAX_FILE || stream.length - o < size) throw new PostcopyError('ERR_IMAGE', `image ${name}: ${size} bytes announced, the transfer is shorter`);
    try {
      writeFileSync(join(dir, name), stream.subarray(o, o + size));
    } catch (err) {
      // A full disk, say: nothing is lost, the task is still whole on the source.
      throw new PostcopyError('ERR_IMAGE', `cannot write image ${name} into ${dir}: ${(err as Error).message}`);
    }
    o += size;
    names.push(name);
  }
  if (o !== stream.length) throw new PostcopyError('ERR_IMAGE', 'bytes after the end of the images transfer');
  return names;
}

/** Serves the directory's images to each connecting target. */
export async function serveImages(dir: string, endpoint: Endpoint): Promise<Listener> {
  return transportFor(endpoint).listen((socket: Socket) => {
    socket.on('error', () => {});
    try {
      socket.end(packImages(dir));
    } catch (err) {
      socket.destroy(err as Error);
    }
  });
}

/** Fetches the images into dir. */
export async function fetchImages(endpoint: Endpoint, dir: string, timeoutMs = 60_000): Promise<string[]> {
  const socket = await transportFor(endpoint).connect();
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new PostcopyError('ERR_TIMEOUT', `the images did not arrive within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(new PostcopyError('ERR_PEER_CLOSED', `fetching the images failed: ${err.message}`));
    });
    socket.on('end', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  return unpackImages(Buffer.concat(chunks), dir);
}
