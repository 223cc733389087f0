import { PostcopyError } from '../errors.js';
import { TcpTransport } from './tcp.js';
import type { Endpoint, Transport } from './transport.js';
import { UnixTransport } from './unix.js';
import { TlsTransport, type TlsMaterial } from './tls.js';

export type { Endpoint, Listener, ListenOptions, Transport } from './transport.js';
export { TcpTransport } from './tcp.js';
export { UnixTransport } from './unix.js';
export { TlsBridge, TlsTransport, type TlsMaterial } from './tls.js';

export function transportFor(endpoint: Endpoint, tls?: TlsMaterial): Transport {
  if (endpoint.kind === 'unix') return new UnixTransport(endpoint.path);
  if (endpoint.kind === 'tcp') return new TcpTransport(endpoint.host, endpoint.port);
  if (!tls) throw new PostcopyError('ERR_INVALID_ARG', 'a tls:// endpoint needs a certificate, its key and the CA (--tls-cert, --tls-key, --tls-ca)');
  return new TlsTransport(endpoint.host, endpoint.port, tls);
}

/** Parses "tcp://HOST:PORT" or "tls://HOST:PORT" (HOST numeric, IPv6 in brackets) or "unix:PATH". */
export function parseEndpoint(text: string): Endpoint {
  if (text.startsWith('unix:')) {
    const path = text.slice(5).replace(/^\/\/(?=\/)/, '');
    if (!path) throw new PostcopyError('ERR_INVALID_ARG', `no path in endpoint "${text}"`);
    return { kind: 'unix', path };
  }
  const m = /^(tcp|tls):\/\/(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+|localhost)):(\d{1,5})$/.exec(text);
  if (!m) throw new PostcopyError('ERR_INVALID_ARG', `endpoint "${text}" is neither tcp://HOST:PORT, tls://HOST:PORT nor unix:PATH`);
  const host = m[2] ?? (m[3] === 'localhost' ? '127.0.0.1' : m[3]);
  const port = Number(m[4]);
  if (port > 65535) throw new PostcopyError('ERR_INVALID_ARG', `port ${port} out of range`);
  return { kind: m[1] as 'tcp' | 'tls', host, port };
}

export function formatEndpoint(e: Endpoint): string {
  if (e.kind === 'unix') return `unix:${e.path}`;
  return e.host.includes(':') ? `${e.kind}://[${e.host}]:${e.port}` : `${e.kind}://${e.host}:${e.port}`;
}
