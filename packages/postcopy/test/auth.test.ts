// Authentication with a pre-shared key, and grants: real sockets, a real faulting process.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { native } from '../src/native/index.js';
import { newNonce, proof, targetHelloAuth, type PresharedKey } from '../src/protocol/auth.js';
import { encodeAuth, encodeGet, encodeHello } from '../src/protocol/codec.js';
import { FrameDecoder } from '../src/protocol/decoder.js';
import { Feature, FrameType, PROTOCOL_VERSION, Role, type Frame } from '../src/protocol/frames.js';
import { ImageFileSource } from '../src/source/image-file.js';
import { PageServer, type PageServerOptions } from '../src/source/server.js';
import type { Grant } from '../src/source/session.js';
import { acknowledgeUffd, receiveUffd } from '../src/target/handoff.js';
import { FaultHandler, type FaultHandlerOptions } from '../src/target/handler.js';
import type { Endpoint } from '../src/transport/transport.js';
import { TcpTransport, TlsTransport } from '../src/transport/index.js';
import { makeCerts, type TestCerts } from './helpers/certs.js';
import { caps, need } from './helpers/caps.js';
import { FAULTER, jsonLines, makeImage, spawnTs } from './helpers/util.js';

const PS = 4096;
const PAGES = 256;
const key: PresharedKey = { keyId: 'migration-1', key: randomBytes(32) };

/** A frame-at-a-time client on the event loop, to say exactly what a target would. */
class RawClient {
  #socket: Socket;
  #decoder = new FrameDecoder();
  #frames: Frame[] = [];
  #waiters: (() => void)[] = [];
  #closed = false;

  constructor(port: number) {
    this.#socket = connect(port, '127.0.0.1');
    this.#socket.on('data', (chunk) => {
      this.#frames.push(...this.#decoder.push(chunk));
      this.#waiters.splice(0).forEach((w) => w());
    });
    this.#socket.on('close', () => {
      this.#closed = true;
      this.#waiters.splice(0).forEach((w) => w());
    });
    this.#socket.on('error', () => {});
  }

  send(buf: Buffer): void {
    this.#socket.write(buf);
  }

  async next(): Promise<Frame | null> {
    while (this.#frames.length === 0 && !this.#closed) await new Promise<void>((r) => this.#waiters.push(r));
    return this.#frames.shift() ?? null;
  }

  /** HELLO with this key (or none), then AUTH when the source asks: the frame that follows. */
  async handshake(k: PresharedKey | null): Promise<Frame | null> {
    const nonceTarget = newNonce();
    this.send(encodeHello({ version: PROTOCOL_VERSION, pageSize: PS, features: Feature.CHECKSUM | Feature.AUTH, role: Role.TARGET, auth: k ? targetHelloAuth(k, nonceTarget) : new Uint8Array(0) }));
    const hello = await this.next();
    if (!hello || hello.type !== FrameType.HELLO || !k) return hello;
    this.send(encodeAuth(proof('target', k, nonceTarget, hello.auth.subarray(0, 32))));
    return this.next();
  }

  close(): void {
    this.#socket.destroy();
  }
}

describe('authentication and grants', () => {
  let dir: string;
  let expected: Uint32Array;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'pc-auth-'));
    expected = makeImage(join(dir, 'img'), PAGES * PS);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function serve(options: PageServerOptions) {
    const server = new PageServer(new ImageFileSource(join(dir, 'img')), options);
    const errors: { code: string; message: string }[] = [];
    server.on('error-frame', (e: { code: string; message: string }) => errors.push(e));
    const listener = await server.listen(new TcpTransport('127.0.0.1', 0));
    return { server, errors, port: (listener.endpoint as { port: number }).port };
  }

  /** A faulter process migrated from `endpoint` through a handler with these options; every page checked. */
  async function migrateFrom(endpoint: Endpoint, options: Partial<FaultHandlerOptions>): Promise<void> {
    const [ours, theirs] = native.socketpair();
    const faulter = spawnTs(FAULTER, ['--length', String(PAGES * PS)], { fd3: theirs });
    native.close(theirs);
    try {
      const handoff = await receiveUffd(ours, 30_000);
      const handler = await FaultHandler.start({ endpoint, uffd: handoff.uffd, mappings: handoff.mappings, targetPid: handoff.pid, ...options });
      acknowledgeUffd(ours);
      const got = await jsonLines(faulter).next((e) => e.event === 'hashes', 60_000);
      assert.equal((await handler.done()).complete, true);
      assert.deepEqual(got.hashes, Array.from(expected));
    } finally {
      native.close(ours);
      faulter.kill('SIGKILL');
    }
  }

  it('migrates a process when the target holds the key', async (t) => {
    if (!need(t, caps.uffd.ok, caps.uffd.detail)) return;
    const { server, port } = await serve({ grants: [key] });
    try {
      await migrateFrom({ kind: 'tcp', host: '127.0.0.1', port }, { key });
    } finally {
      await server.close();
    }
  });

  const refusals: { what: string; source: PresharedKey[]; target: PresharedKey | null; local?: RegExp; remote?: RegExp }[] = [
    { what: 'a wrong key', source: [key], target: { keyId: key.keyId, key: randomBytes(32) }, local: /does not hold key "migration-1"/, remote: /wrong key/ },
    { what: 'an unknown key id', source: [key], target: { keyId: 'other', key: key.key }, remote: /no key "other"/ },
    { what: 'no key at a source that asks for one', source: [key], target: null, remote: /only targets that hold a key/ },
    { what: 'a key at a source that asks for none', source: [], target: key, local: /asks for no key/ },
  ];
  for (const r of refusals) {
    it(`refuses ${r.what} with ERR_AUTH, and the source logs it`, async () => {
      const { server, errors, port } = await serve({ grants: r.source });
      try {
        const err = await FaultHandler.start({ endpoint: { kind: 'tcp', host: '127.0.0.1', port }, mappings: [{ regionId: 0, localStart: 0x10000000, length: PAGES * PS }], key: r.target ?? undefined }).then(
          () => null,
          (e: { code?: string; remoteCode?: string; message: string }) => e,
        );
        assert.ok(err, 'the handler must not start');
        if (r.local) {
          assert.equal(err.code, 'ERR_AUTH');
          assert.match(err.message, r.local);
        } else {
          assert.equal(err.code, 'ERR_REMOTE');
          assert.equal(err.remoteCode, 'ERR_AUTH');
          assert.match(err.message, r.remote!);
        }
        if (r.remote) {
          for (let i = 0; i < 100 && !errors.some((e) => e.code === 'ERR_AUTH'); i++) await new Promise((w) => setTimeout(w, 10));
          const logged = errors.find((e) => e.code === 'ERR_AUTH');
          assert.ok(logged, 'the source logged the refusal');
          assert.match(logged.message, r.remote);
        }
      } finally {
        await server.close();
      }
    });
  }

  describe('TLS with mutual certificates', () => {
    let certs: TestCerts;
    before(() => {
      certs = makeCerts();
    });
    after(() => rmSync(certs.dir, { recursive: true, force: true }));

    async function tlsServe() {
      const server = new PageServer(new ImageFileSource(join(dir, 'img')), { grants: [key] });
      const listener = await server.listen(new TlsTransport('127.0.0.1', 0, certs.source));
      return { server, endpoint: listener.endpoint };
    }

    it('migrates a process over TLS, both ends presenting certificates the CA signed (and the key on top)', async (t) => {
      if (!need(t, caps.uffd.ok, caps.uffd.detail)) return;
      const { server, endpoint } = await tlsServe();
      assert.equal(endpoint.kind, 'tls');
      try {
        await migrateFrom(endpoint, { key, tls: certs.target });
      } finally {
        await server.close();
      }
    });

    it('refuses a target whose certificate another CA signed (ERR_AUTH), and a target without TLS', async () => {
      const { server, endpoint } = await tlsServe();
      try {
        const mappings = [{ regionId: 0, localStart: 0x10000000, length: PAGES * PS }];
        const err = await FaultHandler.start({ endpoint, mappings, key, tls: certs.stranger, resumeTimeoutMs: 0 }).then(
          () => null,
          (e: { code?: string; message: string }) => e,
        );
        assert.equal(err?.code, 'ERR_AUTH', err?.message);
        assert.match(err!.message, /TLS/);
        const plain = await FaultHandler.start({ endpoint: { kind: 'tcp', host: '127.0.0.1', port: (endpoint as { port: number }).port }, mappings, key, resumeTimeoutMs: 0, replyTimeoutMs: 2000 }).then(
          () => null,
          (e: { code?: string }) => e,
        );
        assert.ok(plain, 'a plain connection to a TLS source gets nowhere');
      } finally {
        await server.close();
      }
    });
  });

  it('answers a GET outside the grant with ERR_NOT_GRANTED, logs it, and serves what is granted', async () => {
    const grant: Grant = { ...key, regions: [{ region: 0, firstPage: 0, count: 16 }] };
    const { server, errors, port } = await serve({ grants: [grant] });
    const client = new RawClient(port);
    try {
      const regions = await client.handshake(key);
      assert.equal(regions?.type, FrameType.REGIONS);
      client.send(encodeGet(1, 0, 100, 1));
      const refused = await client.next();
      assert.ok(refused?.type === FrameType.ERROR && refused.id === 1, JSON.stringify(refused));
      assert.equal(refused.code, 'ERR_NOT_GRANTED');
      client.send(encodeGet(2, 0, 8, 8)); // up to the last granted page
      const pages = await client.next();
      assert.ok(pages?.type === FrameType.PAGES && pages.id === 2 && pages.count === 8, JSON.stringify(pages?.type));
      client.send(encodeGet(3, 0, 8, 9)); // one page past it
      const past = await client.next();
      assert.ok(past?.type === FrameType.ERROR && past.code === 'ERR_NOT_GRANTED');
      const logged = () => errors.filter((e) => e.code === 'ERR_NOT_GRANTED').length;
      for (let i = 0; i < 100 && logged() < 2; i++) await new Promise((w) => setTimeout(w, 10)); // the log comes from the connection's thread
      assert.equal(logged(), 2);
    } finally {
      client.close();
      await server.close();
    }
  });
});
