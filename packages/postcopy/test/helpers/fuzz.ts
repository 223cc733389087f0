// Fuzz targets shared by `npm test` (a bounded number of cases) and scripts/fuzz.ts (the long run):
// every parser that takes bytes from a peer must end each case in a clear error with a stable code,
// never in a crash, a hang or a leaked fd.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { decodeFields, imageRecords, ImageMagic, parseMm, parsePagemap } from '../../src/criu/image.js';
import { readRestoreHandoff, LAZY_PAGES_RESTORE_FINISHED } from '../../src/criu/restore-handoff.js';
import { ProtocolError } from '../../src/errors.js';
import { native } from '../../src/native/index.js';
import { encodeAuth, encodeBye, encodeError, encodeGet, encodeHello, encodeRegions, encodeRunHeader } from '../../src/protocol/codec.js';
import { FrameDecoder } from '../../src/protocol/decoder.js';
import { parseWorkingSet } from '../../src/protocol/working-set.js';
import { BYTE_ORDER_MARK, Flag, FrameType, type Frame } from '../../src/protocol/frames.js';
import { AgentDecoder, AgentType, encodeAgentMessage, type AgentMessage } from '../../src/protocol/agent.js';

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const page = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });

/** Encoded frames paired with what decoding must give back. */
export const frameArb: fc.Arbitrary<{ bytes: Buffer; check: (f: Frame) => void }> = fc.oneof(
  fc.record({ version: u32, pageSize: u32, features: u32, role: fc.integer({ min: 0, max: 0xffff }), auth: fc.uint8Array({ maxLength: 64 }) }).map((h) => ({
    bytes: encodeHello(h),
    check: (f: Frame) => {
      assert.equal(f.type, FrameType.HELLO);
      if (f.type !== FrameType.HELLO) return;
      assert.deepEqual([f.version, f.pageSize, f.features, f.role, f.byteOrderMark], [h.version, h.pageSize, h.features, h.role, BYTE_ORDER_MARK]);
      assert.deepEqual(Buffer.from(f.auth), Buffer.from(h.auth));
    },
  })),
  fc.array(fc.tuple(u32, u32, page, page).map(([id, flags, start, length]) => ({ id, flags, start, length })), { maxLength: 8 }).map((regions) => ({
    bytes: encodeRegions(regions),
    check: (f: Frame) => assert.deepEqual(f, { type: FrameType.REGIONS, regions }),
  })),
  fc.tuple(u32, u32, page, u32, fc.integer({ min: 0, max: 255 })).map(([id, region, first, count, flags]) => ({
    bytes: encodeGet(id, region, first, count, flags),
    check: (f: Frame) => assert.deepEqual(f, { type: FrameType.GET, id, flags, region, firstPage: first, count }),
  })),
  fc
    .tuple(u32, u32, page, fc.integer({ min: 1, max: 4 }), fc.constantFrom(FrameType.PAGES, FrameType.PUSH), fc.integer({ min: 0, max: 7 }))
    .map(([id, region, first, count, type, flags]) => {
      const data = Buffer.alloc(count * 64, id & 0xff);
      const table = flags & Flag.CHECKSUMS ? Buffer.alloc(count * 4, 0xc5) : Buffer.alloc(0);
      return {
        bytes: Buffer.concat([encodeRunHeader(type, id, flags, region, first, count, table.length + data.length), table, data]),
        check: (f: Frame) => {
          assert.equal(f.type, type);
          if (f.type !== FrameType.PAGES && f.type !== FrameType.PUSH) return;
          assert.deepEqual([f.id, f.flags, f.region, f.firstPage, f.count], [id, flags, region, first, count]);
          assert.deepEqual(Buffer.from(f.checksums), table);
          assert.deepEqual(Buffer.from(f.data), data);
        },
      };
    }),
  fc.tuple(u32, fc.constantFrom('ERR_OUT_OF_RANGE', 'ERR_SOURCE_GONE', 'ERR_VERSION'), fc.string({ maxLength: 40 })).map(([id, code, message]) => ({
    bytes: encodeError(id, code as 'ERR_VERSION', message),
    check: (f: Frame) => assert.deepEqual(f, { type: FrameType.ERROR, id, code, message }),
  })),
  u32.map((reason) => ({ bytes: encodeBye(reason), check: (f: Frame) => assert.deepEqual(f, { type: FrameType.BYE, reason }) })),
  fc.uint8Array({ minLength: 32, maxLength: 32 }).map((mac) => ({
    bytes: encodeAuth(mac),
    check: (f: Frame) => {
      assert.equal(f.type, FrameType.AUTH);
      if (f.type === FrameType.AUTH) assert.deepEqual(Buffer.from(f.mac), Buffer.from(mac));
    },
  })),
);

function expectProtocolError(err: unknown): void {
  assert.ok(err instanceof ProtocolError, String(err));
  assert.equal(err.code, 'ERR_PROTOCOL');
}

const FIXTURE = fileURLToPath(new URL('../fixtures/criu-memproc', import.meta.url));
const fixtureImages = () => readdirSync(FIXTURE).filter((f) => f.endsWith('.img')).map((f) => readFileSync(join(FIXTURE, f)));

/** Every image parser on the same bytes: each either parses or throws ERR_IMAGE. */
function parseImageAnyhow(bytes: Uint8Array): void {
  for (const parse of [() => parsePagemap(bytes), () => parseMm(bytes), () => decodeFields(bytes, 'x'), () => imageRecords(bytes, ImageMagic.PAGEMAP, 'x')]) {
    try {
      parse();
    } catch (e) {
      assert.equal((e as { code?: string }).code, 'ERR_IMAGE', String(e));
    }
  }
}

/** One message a fuzzed `criu restore` may send on lazy-pages.socket. */
type HandoffPart = { kind: 'int'; value: number } | { kind: 'fd' } | { kind: 'bytes'; bytes: Uint8Array } | { kind: 'fin' };
const HANDOFF_PIDS = [1, 7, 40];

const handoffPartArb: fc.Arbitrary<HandoffPart> = fc.oneof(
  fc.oneof(fc.constantFrom(...HANDOFF_PIDS, ...HANDOFF_PIDS.map((p) => -p)), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })).map((value) => ({ kind: 'int' as const, value })),
  fc.constant({ kind: 'fd' as const }),
  fc.uint8Array({ maxLength: 6 }).map((bytes) => ({ kind: 'bytes' as const, bytes })),
  fc.constant({ kind: 'fin' as const }),
);

const openFds = () => readdirSync('/proc/self/fd').length;

/**
 * Plays a fuzzed `criu restore` on a socketpair against the daemon's reader: it must end in a
 * result or one of its stable errors, close every fd it received, and never wait past its timeout.
 */
async function playHandoff(parts: HandoffPart[], hangUp: boolean): Promise<void> {
  const before = openFds();
  const [daemon, restore] = native.socketpair();
  const received: number[] = [];
  try {
    for (const p of parts) {
      if (p.kind === 'int' || p.kind === 'fin') {
        const b = Buffer.alloc(4);
        b.writeUInt32LE(p.kind === 'fin' ? LAZY_PAGES_RESTORE_FINISHED : p.value >>> 0);
        native.writeAll(restore, b, 0, 4);
      } else if (p.kind === 'bytes') {
        if (p.bytes.length) native.writeAll(restore, p.bytes, 0, p.bytes.length);
      } else {
        const fd = native.eventfd();
        native.sendFd(restore, fd, Buffer.from([0]));
        native.close(fd);
      }
    }
    if (hangUp) native.close(restore);
    const t0 = Date.now();
    try {
      const r = await readRestoreHandoff(daemon, {
        pids: HANDOFF_PIDS,
        timeoutMs: 10,
        onTask: (_pid, uffd) => {
          received.push(uffd);
          native.close(uffd);
        },
      });
      assert.equal(r.tasks.length + r.zombies.length, HANDOFF_PIDS.length);
    } catch (e) {
      assert.ok(['ERR_PROTOCOL', 'ERR_PEER_CLOSED', 'ERR_CONNECTION_LOST', 'ERR_IMAGE', 'ERR_TIMEOUT'].includes((e as { code?: string }).code ?? ''), String(e));
    }
    assert.ok(Date.now() - t0 < 2000, 'the reader kept to its timeout');
  } finally {
    native.close(daemon);
    if (!hangUp) native.close(restore);
  }
  assert.equal(openFds(), before, 'no fd leaked');
}


const hex = fc.uint8Array({ maxLength: 48 }).map((b) => Buffer.from(b).toString('hex'));
const text = fc.string({ maxLength: 40 });
const nat = fc.nat({ max: 2 ** 40 });

/** Every kind of agent message, its fields drawn at random (each within its schema). */
export const agentMessageArb: fc.Arbitrary<AgentMessage> = fc.oneof(
  fc.record({ type: fc.constant(AgentType.HELLO as const), version: nat, agent: text, nonce: hex, keyId: text }, { requiredKeys: ['type', 'version', 'agent'] }),
  fc.record({ type: fc.constant(AgentType.WELCOME as const), version: nat, agent: text, nonce: hex, proof: hex }, { requiredKeys: ['type', 'version', 'agent'] }),
  fc.record({ type: fc.constant(AgentType.AUTH as const), proof: hex }),
  fc.record({ type: fc.constant(AgentType.MIGRATE as const), pid: nat, to: text, checksums: fc.boolean(), push: fc.boolean(), timeoutMs: nat }, { requiredKeys: ['type', 'pid', 'to'] }),
  fc.record({ type: fc.constant(AgentType.PHASE as const), name: text, ms: fc.double({ noNaN: true, noDefaultInfinity: true }) }),
  fc.record({ type: fc.constant(AgentType.RESULT as const), ok: fc.boolean(), result: fc.dictionary(text, fc.oneof(text, nat)), code: text, message: text, running: text }, { requiredKeys: ['type', 'ok'] }),
  fc.record({ type: fc.constant(AgentType.PREPARE as const), migration: text, keyId: text, key: hex, tasks: nat, checksums: fc.boolean(), push: fc.boolean(), pushBatch: nat, pushWindow: nat, timeoutMs: nat, workload: text, workingSet: text }, { requiredKeys: ['type', 'migration', 'keyId', 'key', 'tasks', 'checksums', 'push', 'pushBatch', 'pushWindow', 'timeoutMs'] }),
  fc.record({ type: fc.constant(AgentType.PREPARED as const), migration: text, restoreGate: fc.boolean() }, { requiredKeys: ['type', 'migration'] }),
  fc.record({ type: fc.constant(AgentType.CHECKPOINT_HELD as const), descriptors: text }),
  fc.constant({ type: AgentType.RESTORE_HELD as const }),
  fc.uint8Array({ maxLength: 512 }).map((data) => ({ type: AgentType.IMAGES as const, data })),
  fc.uint8Array({ maxLength: 512 }).map((data) => ({ type: AgentType.BUNDLE as const, data })),
  fc.record({ type: fc.constant(AgentType.BUNDLE_END as const), bytes: nat, delta: fc.boolean() }),
  fc.record({ type: fc.constant(AgentType.RESTORE as const), sources: fc.array(fc.record({ pid: fc.integer({ min: 1, max: 2 ** 22 }), endpoint: text }), { maxLength: 4 }) }),
  fc.record({ type: fc.constant(AgentType.RESTORED as const), restoredPid: nat, restoreMs: fc.double({ noNaN: true, noDefaultInfinity: true }) }),
  fc.record({ type: fc.constant(AgentType.DONE as const), complete: fc.boolean(), report: fc.dictionary(text, fc.oneof(text, nat, fc.boolean())) }),
  fc.constant({ type: AgentType.COMMIT as const }),
  fc.constant({ type: AgentType.COMMITTED as const }),
  fc.constant({ type: AgentType.PING as const }),
  fc.constant({ type: AgentType.STATE_REQUEST as const }),
  fc.record({ type: fc.constant(AgentType.STATE as const), agent: text, hostClass: text, containers: fc.array(fc.record({ id: text, cpu: fc.double({ min: 0, max: 64, noNaN: true }), memGiB: fc.double({ min: 0, max: 512, noNaN: true }) }), { maxLength: 4 }) }),
  fc.constant({ type: AgentType.PONG as const }),
  fc.record({ type: fc.constant(AgentType.ABORT as const), reason: text }),
  fc.record({ type: fc.constant(AgentType.ABORTED as const), clean: fc.boolean(), killed: fc.array(nat, { maxLength: 4 }) }),
  fc.record({ type: fc.constant(AgentType.ERROR as const), code: text, message: text }),
) as fc.Arbitrary<AgentMessage>;

/** What a message decodes to: its JSON fields as JSON carries them (-0 becomes 0). */
const asDecoded = (m: AgentMessage) => (m.type === AgentType.IMAGES || m.type === AgentType.BUNDLE ? { type: m.type, data: Buffer.from(m.data) } : JSON.parse(JSON.stringify(m)));

export interface FuzzTarget {
  name: string;
  /** cases in `npm test`, and in the long run (scripts/fuzz.ts) */
  runs: { test: number; long: number };
  property: () => fc.IPropertyWithHooks<unknown> | fc.IAsyncPropertyWithHooks<unknown>;
}

export const fuzzTargets: FuzzTarget[] = [
  {
    name: 'frame decoder: arbitrary bytes',
    runs: { test: 2000, long: 400_000 },
    property: () =>
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 256 }), fc.nat(256), (bytes, cut) => {
        const decoder = new FrameDecoder();
        try {
          decoder.push(bytes.subarray(0, cut));
          decoder.push(bytes.subarray(cut));
        } catch (err) {
          expectProtocolError(err);
          assert.throws(() => decoder.push(Buffer.alloc(1)), ProtocolError); // stays failed
        }
      }),
  },
  {
    name: 'frame decoder: one byte changed in valid frames',
    runs: { test: 2000, long: 400_000 },
    property: () =>
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 3 }), fc.nat(), fc.integer({ min: 1, max: 255 }), (frames, at, xor) => {
        const bytes = Buffer.concat(frames.map((f) => f.bytes));
        bytes[at % bytes.length] ^= xor;
        try {
          new FrameDecoder().push(bytes);
        } catch (err) {
          expectProtocolError(err);
        }
      }),
  },
  {
    name: 'CRIU image parsers: arbitrary bytes',
    runs: { test: 2000, long: 100_000 },
    property: () => fc.property(fc.uint8Array({ maxLength: 256 }), parseImageAnyhow),
  },
  {
    name: 'CRIU image parsers: a real image with bytes changed',
    runs: { test: 1000, long: 100_000 },
    property: () => {
      const images = fixtureImages();
      return fc.property(fc.nat(images.length - 1), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (which, edits) => {
        const copy = Buffer.from(images[which]);
        for (const [at, byte] of edits) copy[at % copy.length] = byte;
        parseImageAnyhow(copy);
      });
    },
  },
  {
    name: 'working-set file: arbitrary text and JSON',
    runs: { test: 1000, long: 100_000 },
    property: () =>
      fc.property(fc.oneof(fc.string(), fc.json(), fc.record({ format: fc.constant('postcopy-working-set'), version: fc.constant(1), pageSize: fc.constantFrom(4096, 4095, 0), tasks: fc.array(fc.record({ pid: fc.integer(), pages: fc.array(fc.oneof(fc.integer(), fc.double(), fc.string())) })) }).map((d) => JSON.stringify(d))), (text) => {
        try {
          parseWorkingSet(text);
        } catch (err) {
          assert.equal((err as { code?: string }).code, 'ERR_INVALID_ARG', String(err));
        }
      }),
  },
  {
    name: 'lazy-pages socket: what criu restore sends',
    runs: { test: 150, long: 20_000 },
    property: () => fc.asyncProperty(fc.array(handoffPartArb, { maxLength: 8 }), fc.boolean(), playHandoff),
  },
  {
    name: 'agent protocol: messages survive encoding, in any split of the stream',
    runs: { test: 1000, long: 100_000 },
    property: () =>
      fc.property(fc.array(agentMessageArb, { minLength: 1, maxLength: 4 }), fc.nat(), (messages, cut) => {
        const bytes = Buffer.concat(messages.map(encodeAgentMessage));
        const decoder = new AgentDecoder();
        const at = cut % (bytes.length + 1);
        const got = [...decoder.push(bytes.subarray(0, at)), ...decoder.push(bytes.subarray(at))];
        assert.deepEqual(got.map((m) => (m.type === AgentType.IMAGES || m.type === AgentType.BUNDLE ? { type: m.type, data: Buffer.from(m.data) } : m)), messages.map(asDecoded));
        assert.equal(decoder.pending, 0);
      }),
  },
  {
    name: 'agent protocol: arbitrary bytes, and valid messages with a byte changed',
    runs: { test: 2000, long: 200_000 },
    property: () =>
      fc.property(fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 256 }), fc.tuple(agentMessageArb, fc.nat(), fc.integer({ min: 1, max: 255 })).map(([m, at, xor]) => {
        const bytes = encodeAgentMessage(m);
        bytes[at % bytes.length] ^= xor;
        return bytes;
      })), (bytes) => {
        try {
          new AgentDecoder().push(bytes);
        } catch (err) {
          expectProtocolError(err);
        }
      }),
  },
];

/** Runs one target; returns the number of cases run. Throws fast-check's report on a failure. */
export async function runFuzzTarget(target: FuzzTarget, numRuns: number, seed?: number): Promise<number> {
  const property = target.property();
  const params = { numRuns, ...(seed === undefined ? {} : { seed }) };
  if (property.isAsync()) await fc.assert(property as fc.IAsyncPropertyWithHooks<unknown>, params);
  else fc.assert(property as fc.IPropertyWithHooks<unknown>, params);
  return numRuns;
}
