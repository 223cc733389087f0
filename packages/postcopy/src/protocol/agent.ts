// The agents' control protocol, version 1: what `postcopy migrate --to` and two `postcopy agent`s
// say to each other. Pure: bytes in, typed messages out (and back), fuzzed like the page protocol.
//   frame: u32 LE length of what follows | u8 type | body
//   body: UTF-8 JSON for every type but IMAGES, checked field by field against its type's schema;
//         IMAGES carries the packed images directory (criu/image-transfer.ts) as raw bytes.
// One connection carries one exchange: a HELLO first (and, over plain TCP, a pre-shared key
// proven both ways), then a MIGRATE (from the CLI, on the agent's own Unix socket) or a PREPARE
// (from the source agent) and what follows it. docs/protocol.md describes every message.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { ProtocolError } from '../errors.js';
import { checkFields, type Schema } from './schema.js';

export const AGENT_PROTOCOL_VERSION = 1;
/** header: u32 length, u8 type */
export const AGENT_HEADER = 5;
/** the images of a dump are small (the lazy memory stays behind), but a JSON body is smaller still */
export const MAX_IMAGES_BODY = 256 << 20;
export const MAX_JSON_BODY = 1 << 20;
/** a BUNDLE frame's most: a tar stream goes in pieces */
export const MAX_BUNDLE_BODY = 4 << 20;

/** Types whose body is raw bytes, not JSON. */
type RawType = AgentType.IMAGES | AgentType.BUNDLE;

export enum AgentType {
  HELLO = 1,
  WELCOME = 2,
  AUTH = 3,
  MIGRATE = 4,
  PHASE = 5,
  RESULT = 6,
  PREPARE = 7,
  PREPARED = 8,
  IMAGES = 9,
  RESTORE = 10,
  RESTORED = 11,
  DONE = 12,
  COMMIT = 13,
  COMMITTED = 14,
  ABORT = 15,
  ABORTED = 16,
  ERROR = 17,
  PING = 18,
  PONG = 19,
  BUNDLE = 20,
  BUNDLE_END = 21,
  STATE_REQUEST = 22,
  STATE = 23,
  CHECKPOINT_HELD = 24,
  RESTORE_HELD = 25,
}

const SCHEMAS: Record<Exclude<AgentType, RawType>, Schema> = {
  // client -> agent: its version and name; over plain TCP, its nonce and the key it claims
  [AgentType.HELLO]: { version: 'uint', agent: 'string', nonce: 'hex?', keyId: 'string?' },
  // agent -> client: its version and name; with a key, its nonce and its proof
  [AgentType.WELCOME]: { version: 'uint', agent: 'string', nonce: 'hex?', proof: 'hex?' },
  // client -> agent: the client's proof
  [AgentType.AUTH]: { proof: 'hex' },
  // CLI -> its own agent (or a planner -> an agent): move task `pid`, or runc container `container`
  // (of runc root `runcRoot`), to the agent at `to`; a planner adds its forecast and its prices
  [AgentType.MIGRATE]: { pid: 'uint?', container: 'string?', runcRoot: 'string?', copyBundle: 'bool?', forecast: 'object?', to: 'string', checksums: 'bool?', push: 'bool?', timeoutMs: 'uint?' },
  // agent -> CLI: a step of the migration done, ms since it began (the freeze is the step `frozen`)
  [AgentType.PHASE]: { name: 'string', ms: 'number' },
  // agent -> CLI: the end; `result` on success, else code, message and which copy runs
  [AgentType.RESULT]: { ok: 'bool', result: 'object?', code: 'string?', message: 'string?', running: 'string?' },
  // source agent -> destination agent: get ready to restore this migration's tasks (a container: its id and bundle path)
  // workload: the key the destination keeps the workload's working set under (agent/working-sets.ts);
  // workingSet: the record of its last move (protocol/working-set.ts, as JSON text), pushed first
  [AgentType.PREPARE]: { migration: 'string', keyId: 'string', key: 'hex', tasks: 'uint', container: 'string?', bundle: 'string?', copyBundle: 'bool?', checksums: 'bool', push: 'bool', pushBatch: 'uint', pushWindow: 'uint', timeoutMs: 'uint', workload: 'string?', workingSet: 'string?' },
  // destination -> source: `criu restore` waits, its handlers' threads are up; restoreGate: a
  // container's `runc restore` starts once CHECKPOINT_HELD brings runc's descriptors.json (criu/criu-gate.ts)
  [AgentType.PREPARED]: { migration: 'string', restoreGate: 'bool?' },
  // source -> destination: where each task's pages are served (pid as the dump names it)
  [AgentType.RESTORE]: { sources: 'array' },
  // destination -> source: the restored tree runs (its root, as the destination sees it);
  // restoreMs: from the images' arrival to `criu restore -d` exiting, on the destination's clock
  [AgentType.RESTORED]: { restoredPid: 'uint', restoreMs: 'number' },
  // destination -> source: every task has every page (or exited); the handlers' reports
  [AgentType.DONE]: { complete: 'bool', report: 'object' },
  // source -> destination: the original is gone; the restored tree is the task now
  [AgentType.COMMIT]: {},
  [AgentType.COMMITTED]: {},
  // source -> destination: remove whatever was restored
  [AgentType.ABORT]: { reason: 'string' },
  // destination -> source: every restored task was killed and seen dead (clean), or not
  [AgentType.ABORTED]: { clean: 'bool', killed: 'ints' },
  [AgentType.ERROR]: { code: 'string', message: 'string' },
  // either way, answered with a PONG: a round trip timed (the source times one before the freeze)
  [AgentType.PING]: {},
  [AgentType.PONG]: {},
  // source -> destination, --copy-bundle: the end of a tar stream of the bundle (BUNDLE frames carry
  // it, raw); delta: files changed since the first pass, sent during the downtime
  [AgentType.BUNDLE_END]: { bytes: 'uint', delta: 'bool' },
  // source -> destination (after a PREPARED with restoreGate): `runc checkpoint` runs, its DUMP held
  // before the freeze; descriptors: the descriptors.json it wrote, which `runc restore` reads first
  [AgentType.CHECKPOINT_HELD]: { descriptors: 'string' },
  // destination -> source: `runc restore` runs, its RESTORE held until the images are in
  [AgentType.RESTORE_HELD]: {},
  // a planner -> an agent: this host's state, for `postcopy plan`
  [AgentType.STATE_REQUEST]: {},
  // its host class, and each running container's CPU (busy threads) and memory (GiB)
  [AgentType.STATE]: { agent: 'string', hostClass: 'string', containers: 'array' },
};

export interface Fields {
  [AgentType.HELLO]: { version: number; agent: string; nonce?: string; keyId?: string };
  [AgentType.WELCOME]: { version: number; agent: string; nonce?: string; proof?: string };
  [AgentType.AUTH]: { proof: string };
  [AgentType.MIGRATE]: { pid?: number; container?: string; runcRoot?: string; copyBundle?: boolean; forecast?: { gainJ: number; costJ: number; threadW: number; nicJPerByte: number }; to: string; checksums?: boolean; push?: boolean; timeoutMs?: number };
  [AgentType.PHASE]: { name: string; ms: number };
  [AgentType.RESULT]: { ok: boolean; result?: Record<string, unknown>; code?: string; message?: string; running?: string };
  [AgentType.PREPARE]: { migration: string; keyId: string; key: string; tasks: number; container?: string; bundle?: string; copyBundle?: boolean; checksums: boolean; push: boolean; pushBatch: number; pushWindow: number; timeoutMs: number; workload?: string; workingSet?: string };
  [AgentType.PREPARED]: { migration: string; restoreGate?: boolean };
  [AgentType.IMAGES]: { data: Uint8Array };
  [AgentType.RESTORE]: { sources: { pid: number; endpoint: string }[] };
  [AgentType.RESTORED]: { restoredPid: number; restoreMs: number };
  [AgentType.DONE]: { complete: boolean; report: Record<string, unknown> };
  [AgentType.COMMIT]: object;
  [AgentType.COMMITTED]: object;
  [AgentType.ABORT]: { reason: string };
  [AgentType.ABORTED]: { clean: boolean; killed: number[] };
  [AgentType.ERROR]: { code: string; message: string };
  [AgentType.PING]: object;
  [AgentType.PONG]: object;
  [AgentType.BUNDLE]: { data: Uint8Array };
  [AgentType.BUNDLE_END]: { bytes: number; delta: boolean };
  [AgentType.STATE_REQUEST]: object;
  [AgentType.STATE]: { agent: string; hostClass: string; containers: { id: string; cpu: number; memGiB: number }[] };
  [AgentType.CHECKPOINT_HELD]: { descriptors: string };
  [AgentType.RESTORE_HELD]: object;
}

export type AgentMessage = { [T in AgentType]: { type: T } & Fields[T] }[AgentType];
export type MessageOf<T extends AgentType> = Extract<AgentMessage, { type: T }>;

/** The sources of a RESTORE: a task's pid (as the dump names it) and where its pages are served. */
function checkSources(v: unknown): void {
  for (const s of v as unknown[]) {
    const ok = typeof s === 'object' && s !== null && Number.isSafeInteger((s as { pid: unknown }).pid) && (s as { pid: number }).pid > 0 && typeof (s as { endpoint: unknown }).endpoint === 'string';
    if (!ok) throw new ProtocolError(`RESTORE: a source is {pid, endpoint}, not ${JSON.stringify(s)?.slice(0, 80)}`);
  }
}

const rawLimit = (type: RawType) => (type === AgentType.IMAGES ? MAX_IMAGES_BODY : MAX_BUNDLE_BODY);

/** The containers of a STATE: {id, cpu >= 0, memGiB >= 0} each. */
function checkStateContainers(v: unknown): void {
  for (const c of v as unknown[]) {
    const x = c as { id?: unknown; cpu?: unknown; memGiB?: unknown };
    const ok = typeof c === 'object' && c !== null && typeof x.id === 'string' && typeof x.cpu === 'number' && x.cpu >= 0 && Number.isFinite(x.cpu) && typeof x.memGiB === 'number' && x.memGiB >= 0 && Number.isFinite(x.memGiB);
    if (!ok) throw new ProtocolError(`STATE: a container is {id, cpu, memGiB}, not ${JSON.stringify(c)?.slice(0, 80)}`);
  }
}

/** Checks fields against the type's schema; returns only the schema's fields. */
function checked(type: Exclude<AgentType, RawType>, body: unknown): Record<string, unknown> {
  const out = checkFields(AgentType[type], SCHEMAS[type], body);
  if (type === AgentType.RESTORE) checkSources(out.sources);
  if (type === AgentType.STATE) checkStateContainers(out.containers);
  if (type === AgentType.MIGRATE && out.forecast !== undefined) {
    const f = out.forecast as Record<string, unknown>;
    for (const k of ['gainJ', 'costJ', 'threadW', 'nicJPerByte']) if (typeof f[k] !== 'number' || !Number.isFinite(f[k])) throw new ProtocolError(`MIGRATE: forecast.${k} must be a number`);
  }
  return out;
}

/** One message as a frame. Throws ProtocolError if its fields do not fit its type. */
export function encodeAgentMessage(m: AgentMessage): Buffer {
  let body: Buffer;
  if (m.type === AgentType.IMAGES || m.type === AgentType.BUNDLE) {
    if (m.data.length > rawLimit(m.type)) throw new ProtocolError(`${AgentType[m.type]}: ${m.data.length} bytes, more than ${rawLimit(m.type)}`);
    body = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.length);
  } else {
    if (!(m.type in SCHEMAS)) throw new ProtocolError(`unknown agent message type ${m.type}`);
    const { type, ...fields } = m;
    body = Buffer.from(JSON.stringify(checked(type, fields)), 'utf8');
    if (body.length > MAX_JSON_BODY) throw new ProtocolError(`${AgentType[type]}: ${body.length} bytes of JSON, more than ${MAX_JSON_BODY}`);
  }
  const head = Buffer.alloc(AGENT_HEADER);
  head.writeUInt32LE(body.length + 1, 0);
  head.writeUInt8(m.type, 4);
  return Buffer.concat([head, body]);
}

/** A message from a frame's type and body. Throws ProtocolError (ERR_PROTOCOL) on anything malformed. */
export function decodeAgentBody(type: number, body: Uint8Array): AgentMessage {
  if (type === AgentType.IMAGES || type === AgentType.BUNDLE) {
    if (body.length > rawLimit(type)) throw new ProtocolError(`${AgentType[type]}: ${body.length} bytes, more than ${rawLimit(type)}`);
    return { type, data: body };
  }
  if (!(type in SCHEMAS)) throw new ProtocolError(`unknown agent message type ${type}`);
  if (body.length > MAX_JSON_BODY) throw new ProtocolError(`${AgentType[type]}: ${body.length} bytes of JSON, more than ${MAX_JSON_BODY}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch {
    throw new ProtocolError(`${AgentType[type]}: the body is not UTF-8 JSON`);
  }
  return { type, ...checked(type as Exclude<AgentType, RawType>, parsed) } as AgentMessage;
}

/** A streaming decoder: push bytes as they come, take whole messages out. */
export class AgentDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;

  /** Whole messages in these bytes (and those before). Throws ProtocolError; the stream is then unusable. */
  push(bytes: Uint8Array): AgentMessage[] {
    this.#chunks.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length));
    this.#buffered += bytes.length;
    const out: AgentMessage[] = [];
    for (;;) {
      if (this.#buffered < AGENT_HEADER) break;
      const head = this.#peek(AGENT_HEADER);
      const length = head.readUInt32LE(0);
      const type = head.readUInt8(4);
      if (length < 1) throw new ProtocolError('an agent frame of length 0');
      const limit = type === AgentType.IMAGES || type === AgentType.BUNDLE ? rawLimit(type) : MAX_JSON_BODY;
      if (length - 1 > limit) throw new ProtocolError(`an agent frame of ${length} bytes (type ${type}): more than ${limit}`);
      if (!(type in AgentType)) throw new ProtocolError(`unknown agent message type ${type}`);
      if (this.#buffered < 4 + length) break;
      const frame = this.#take(4 + length);
      out.push(decodeAgentBody(type, frame.subarray(AGENT_HEADER)));
    }
    return out;
  }

  /** Bytes received that no whole message holds yet. */
  get pending(): number {
    return this.#buffered;
  }

  #peek(n: number): Buffer {
    if (this.#chunks[0].length < n) this.#chunks = [Buffer.concat(this.#chunks)];
    return this.#chunks[0];
  }

  #take(n: number): Buffer {
    const all = this.#chunks.length === 1 ? this.#chunks[0] : Buffer.concat(this.#chunks);
    const rest = all.subarray(n);
    this.#chunks = rest.length ? [rest] : [];
    this.#buffered = rest.length;
    return all.subarray(0, n);
  }
}

/**
 * A proof that one side of an agent connection holds the pre-shared key: HMAC-SHA256 over a label
 * of its side (so it cannot be reflected), the key id and both nonces (so it cannot be replayed).
 * The labels differ from the page protocol's: a proof from one is worth nothing in the other.
 */
export function agentProof(side: 'client' | 'agent', key: Uint8Array, keyId: string, nonceClient: Uint8Array, nonceAgent: Uint8Array): Buffer {
  return createHmac('sha256', key).update(`postcopy-agent ${side}\0${keyId}\0`).update(nonceClient).update(nonceAgent).digest();
}

export function proofEquals(expected: Buffer, gotHex: string | undefined): boolean {
  if (typeof gotHex !== 'string') return false;
  const got = Buffer.from(gotHex, 'hex');
  return got.length === expected.length && timingSafeEqual(expected, got);
}
