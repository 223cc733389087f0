import { PostcopyError } from '../errors.js';
import { TcpTransport } from './tcp.js';
import type { Endpoint, Transport } from './transport.js';
import { UnixTransport } from './unix.js';

export type { Endpoint, Listener, ListenOptions, Transport } from './transport.js';
export { TcpTransport } from './tcp.js';
export { UnixTransport } from './unix.js';

export function transportFor(endpoint: Endpoint): Transport {
  return endpoint.kind === 'tcp' ? new TcpTransport(endpoint.host, endpoint.port) : new UnixTransport(endpoint.path);
}

/** Parses "tcp://HOST:PORT" (HOST numeric, IPv6 in brackets) or "unix:PATH". */
export function parseEndpoint(text: string): Endpoint {
  if (text.startsWith('unix:')) {
    const path = text.slice(5).replace(/^\/\/(?=\/)/, '');
    if (!path) throw new PostcopyError('ERR_INVALID_ARG', `no path in endpoint "${text}"`);
    return { kind: 'unix', path };
  }
  const m = /^tcp:\/\/(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+|localhost)):(\d{1,5})$/.exec(text);
  if (!m) throw new PostcopyError('ERR_INVALID_ARG', `endpoint "${text}" is neither tcp://HOST:PORT nor unix:PATH`);
  const host = m[1] ?? (m[2] === 'localhost' ? '127.0.0.1' : m[2]);
  const port = Number(m[3]);
  if (port > 65535) throw new PostcopyError('ERR_INVALID_ARG', `port ${port} out of range`);
  return { kind: 'tcp', host, port };
}

export function formatEndpoint(e: Endpoint): string {
  if (e.kind === 'unix') return `unix:${e.path}`;
  return e.host.includes(':') ? `tcp://[${e.host}]:${e.port}` : `tcp://${e.host}:${e.port}`;
}
