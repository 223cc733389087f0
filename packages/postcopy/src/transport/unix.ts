import { rmSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { native } from '../native/index.js';
import { closeServer, type Listener, type ListenOptions, type Transport } from './transport.js';

export class UnixTransport implements Transport {
  readonly kind = 'unix' as const;
  constructor(readonly path: string) {}

  async listen(onConnection: (socket: Socket) => void, options: ListenOptions = {}): Promise<Listener> {
    rmSync(this.path, { force: true });
    const server = createServer({ pauseOnConnect: options.pauseOnConnect ?? false }, onConnection);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return {
      endpoint: { kind: 'unix', path: this.path },
      close: async () => {
        await closeServer(server);
        rmSync(this.path, { force: true });
      },
    };
  }

  connect(): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(this.path, () => {
        socket.off('error', reject);
        resolve(socket);
      });
      socket.once('error', reject);
    });
  }

  connectBlocking(): number {
    return native.unixConnect(this.path);
  }
}
