// TLS with mutual certificates (node:tls). The fault path runs on blocking fds in threads, which
// cannot speak TLS, so TLS ends on an event loop and a local Unix socket pair carries the plain
// stream the rest of the way: on the source, each accepted TLS connection is handed to the page
// server as the inner end of a socketpair; on the target, the handler's threads connect to a local
// bridge that opens one TLS connection to the source for each of theirs.
import { rmSync } from 'node:fs';
import { createServer as createUnixServer, Socket, type Server } from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { PostcopyError } from '../errors.js';
import { native } from '../native/index.js';
import { closeServer, listenTcp, type Listener, type ListenOptions, type Transport } from './transport.js';

/** PEM: this end's certificate and key, and the CA that signs the other end's certificate. */
export interface TlsMaterial {
  cert: string | Buffer;
  key: string | Buffer;
  ca: string | Buffer;
}

/** Pipes two sockets into each other until either ends; then ends both. */
function splice(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  const end = () => {
    a.destroy();
    b.destroy();
  };
  a.on('close', end).on('error', end);
  b.on('close', end).on('error', end);
}

/** A plain socket pair: one end on this event loop, the other for whoever takes its fd. */
function plainPair(): { near: Socket; far: Socket } {
  const [a, b] = native.socketpair(true);
  return { near: new Socket({ fd: a, readable: true, writable: true }), far: new Socket({ fd: b, readable: true, writable: true, pauseOnCreate: true } as never) };
}

export class TlsTransport implements Transport {
  readonly kind = 'tls' as const;
  constructor(
    readonly host: string,
    readonly port: number,
    readonly material: TlsMaterial,
  ) {}

  /** Accepts TLS from targets whose certificate the CA signed; hands on a plain inner socket for each. */
  async listen(onConnection: (socket: Socket) => void, _options: ListenOptions = {}): Promise<Listener> {
    const server = createTlsServer({ ...this.material, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (tls: TLSSocket) => {
      tls.setNoDelay(true);
      const { near, far } = plainPair();
      splice(tls, near);
      onConnection(far);
    });
    server.on('tlsClientError', () => {}); // a refused handshake ends that connection, not the server
    const port = await listenTcp(server, this.host, this.port);
    return { endpoint: { kind: 'tls', host: this.host, port }, close: () => closeServer(server) };
  }

  connect(): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const socket = tlsConnect({ host: this.host, port: this.port, ...this.material, checkServerIdentity: () => undefined, minVersion: 'TLSv1.3' }, () => {
        socket.off('error', reject);
        resolve(socket);
      });
      socket.once('error', reject);
    });
  }

  connectBlocking(): number {
    throw new PostcopyError('ERR_INVALID_ARG', 'TLS does not run on a blocking fd: connect through a TlsBridge');
  }
}

/**
 * The target's side: a Unix socket the handler's threads connect to; each connection is carried
 * over a TLS connection of its own to the source. The source's certificate must be signed by the CA
 * (its name is not checked: the CA is the migration's own).
 */
export class TlsBridge {
  readonly path: string;
  /** the last TLS failure (a refused certificate...): a thread only sees its connection end */
  lastError: Error | null = null;
  #server: Server;
  #sockets = new Set<Socket>();

  private constructor(path: string, server: Server) {
    this.path = path;
    this.#server = server;
  }

  static async start(path: string, remote: { host: string; port: number }, material: TlsMaterial): Promise<TlsBridge> {
    rmSync(path, { force: true });
    const sockets = new Set<Socket>();
    let bridge: TlsBridge | null = null;
    const server = createUnixServer((local) => {
      sockets.add(local);
      local.pause();
      const tls = tlsConnect({ host: remote.host, port: remote.port, ...material, checkServerIdentity: () => undefined, minVersion: 'TLSv1.3' });
      sockets.add(tls);
      tls.setNoDelay(true);
      // Until TLS is up, a failure ends the local connection: the thread sees it as a lost connection.
      tls.once('error', (err) => {
        if (bridge) bridge.lastError = err;
        local.destroy();
      });
      tls.once('secureConnect', () => {
        // TLS 1.3 lets a client finish its handshake before the server checks the client's
        // certificate; a refusal then only shows as the connection ending before any byte.
        let heard = false;
        tls.once('data', () => (heard = true));
        tls.once('close', () => {
          if (!heard && bridge) bridge.lastError ??= new Error('the source ended the TLS connection before saying anything: it does not accept this target\'s certificate');
        });
        splice(local, tls);
        local.resume();
      });
      const forget = () => {
        sockets.delete(local);
        sockets.delete(tls);
      };
      local.on('close', forget);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    bridge = new TlsBridge(path, server);
    bridge.#sockets = sockets;
    return bridge;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await closeServer(this.#server);
    rmSync(this.path, { force: true });
  }
}
