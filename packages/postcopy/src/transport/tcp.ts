import { createConnection, createServer, type Socket } from 'node:net';
import { native } from '../native/index.js';
import { closeServer, type Listener, type ListenOptions, type Transport } from './transport.js';

export class TcpTransport implements Transport {
  readonly kind = 'tcp' as const;
  constructor(
    readonly host: string,
    readonly port: number,
  ) {}

  async listen(onConnection: (socket: Socket) => void, options: ListenOptions = {}): Promise<Listener> {
    const server = createServer({ noDelay: true, pauseOnConnect: options.pauseOnConnect ?? false }, (socket) => {
      socket.setNoDelay(true);
      onConnection(socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, this.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : this.port;
    return { endpoint: { kind: 'tcp', host: this.host, port }, close: () => closeServer(server) };
  }

  connect(): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ host: this.host, port: this.port, noDelay: true }, () => {
        socket.off('error', reject);
        resolve(socket);
      });
      socket.once('error', reject);
    });
  }

  connectBlocking(): number {
    return native.tcpConnect(this.host, this.port);
  }
}
