// Asks a page server for its regions, on the event loop (setup, not the fault path).
import { PostcopyError, ProtocolError, RemoteError } from '../errors.js';
import { encodeBye, encodeHello } from '../protocol/codec.js';
import { FrameDecoder } from '../protocol/decoder.js';
import { ByeReason, Feature, FrameType, PROTOCOL_VERSION, Role, type RegionInfo } from '../protocol/frames.js';
import { transportFor, type Endpoint } from '../transport/index.js';

export async function probeSource(endpoint: Endpoint, pageSize: number, timeoutMs = 10_000): Promise<RegionInfo[]> {
  const socket = await transportFor(endpoint).connect();
  const decoder = new FrameDecoder();
  try {
    return await new Promise<RegionInfo[]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new PostcopyError('ERR_TIMEOUT', `no answer from ${JSON.stringify(endpoint)} in ${timeoutMs} ms`)), timeoutMs);
      let hello = false;
      socket.on('data', (chunk: Buffer) => {
        try {
          for (const f of decoder.push(chunk)) {
            if (f.type === FrameType.ERROR) throw new RemoteError(f.code, f.message);
            if (!hello) {
              if (f.type !== FrameType.HELLO) throw new ProtocolError('expected HELLO');
              hello = true;
            } else if (f.type === FrameType.REGIONS) {
              clearTimeout(timer);
              resolve(f.regions);
            }
          }
        } catch (err) {
          clearTimeout(timer);
          reject(err);
        }
      });
      socket.on('close', () => {
        clearTimeout(timer);
        reject(new PostcopyError('ERR_PEER_CLOSED', 'the source closed the connection during HELLO'));
      });
      socket.on('error', () => {});
      socket.write(encodeHello({ version: PROTOCOL_VERSION, pageSize, features: Feature.ZERO | Feature.PUSH, role: Role.TARGET, auth: new Uint8Array(0) }));
    });
  } finally {
    if (!socket.destroyed) socket.end(encodeBye(ByeReason.ABORT));
  }
}
