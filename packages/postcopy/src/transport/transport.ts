// One interface for every stream transport. The event-loop side gets a net.Socket;
// a dedicated fault thread gets a blocking fd for the same endpoint.
import type { Server, Socket } from 'node:net';

export type Endpoint = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string } | { kind: 'tls'; host: string; port: number };

export interface Listener {
  readonly endpoint: Endpoint;
  close(): Promise<void>;
}

export interface ListenOptions {
  /** hand over connections unread, so their fd can move to a thread of its own */
  pauseOnConnect?: boolean;
}

export interface Transport {
  readonly kind: Endpoint['kind'];
  /** Listens and hands each accepted connection to onConnection. */
  listen(onConnection: (socket: Socket) => void, options?: ListenOptions): Promise<Listener>;
  /** Connects for use on the event loop. */
  connect(): Promise<Socket>;
  /** Connects a blocking socket fd (TCP_NODELAY for TCP), for a thread that blocks on it. */
  connectBlocking(): number;
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Listens on host:port (0: any free port) and returns the port it got. */
export async function listenTcp(server: Server, host: string, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  return typeof address === 'object' && address ? address.port : port;
}
