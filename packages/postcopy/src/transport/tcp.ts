import { createConnection, createServer, type Socket } from 'node:net';
import { native } from '../native/index.js';
import { closeServer, listenTcp, type Listener, type ListenOptions, type Transport } from './transport.js';

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
    const port = await listenTcp(server, this.host, this.port);
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
