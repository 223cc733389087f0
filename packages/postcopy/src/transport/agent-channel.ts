// One agent-protocol connection on the event loop: typed messages out, typed messages in, waited
// for by type with a deadline; and the opening handshake, with a pre-shared key proven both ways
// where the transport itself (TLS with mutual certificates, or a Unix socket) does not authenticate.
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { isErrorCode, PostcopyError, type ErrorCode } from '../errors.js';
import type { PresharedKey } from '../protocol/auth.js';
import { AGENT_PROTOCOL_VERSION, AgentDecoder, agentProof, AgentType, encodeAgentMessage, proofEquals, type AgentMessage, type MessageOf } from '../protocol/agent.js';

const NONCE = 32;

export class AgentChannel {
  #decoder = new AgentDecoder();
  #inbox: AgentMessage[] = [];
  /** every next() waiting, woken by each message and by the end (each looks at the inbox in turn) */
  #waiters = new Set<() => void>();
  #closed: PostcopyError | null = null;
  /** the peer's name, from its HELLO or WELCOME */
  peer = '';
  /** resolves with why the connection ended, once it has */
  readonly ended: Promise<PostcopyError>;
  #resolveEnded!: (err: PostcopyError) => void;

  constructor(readonly socket: Socket) {
    this.ended = new Promise((resolve) => (this.#resolveEnded = resolve));
    socket.on('data', (d: Buffer) => {
      try {
        this.#inbox.push(...this.#decoder.push(d));
      } catch (err) {
        this.#end(err as PostcopyError);
        socket.destroy();
      }
      this.#wake();
    });
    socket.on('error', (err) => this.#end(new PostcopyError('ERR_PEER_CLOSED', `the connection to ${this.peer || 'the agent'} failed: ${err.message}`)));
    socket.on('close', () => this.#end(new PostcopyError('ERR_PEER_CLOSED', `${this.peer || 'the agent'} closed the connection`)));
    socket.resume();
  }

  /** Why the connection is over, or null while it is up. */
  get closed(): PostcopyError | null {
    return this.#closed;
  }

  send(m: AgentMessage): void {
    if (this.#closed) throw this.#closed;
    this.socket.write(encodeAgentMessage(m));
  }

  /** Sends, then waits until the socket has taken what it buffered (for a long stream of frames). */
  async sendDrained(m: AgentMessage): Promise<void> {
    if (this.#closed) throw this.#closed;
    if (this.socket.write(encodeAgentMessage(m))) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.once('drain', done);
      this.socket.once('close', done);
    });
    if (this.#closed) throw this.#closed;
  }

  /** Sends an ERROR, then ends the connection. */
  fail(code: ErrorCode | string, message: string): void {
    try {
      if (!this.#closed) this.socket.end(encodeAgentMessage({ type: AgentType.ERROR, code, message }));
    } catch {
      this.socket.destroy();
    }
  }

  close(): void {
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  /**
   * The next message, which must be one of these types. An ERROR from the peer throws it (its
   * code); any other type throws ERR_PROTOCOL; the connection's end or the deadline throws too.
   * `until`: a promise whose rejection ends the wait with its error, at once and taking no message
   * (a migration's failure, seen elsewhere).
   */
  async next<T extends AgentType>(types: readonly T[], timeoutMs: number, until?: Promise<unknown>): Promise<MessageOf<T>> {
    const deadline = Date.now() + timeoutMs;
    let abandoned: { err: unknown } | null = null;
    until?.catch((err: unknown) => {
      abandoned = { err };
      this.#wake();
    });
    for (;;) {
      if (abandoned) throw (abandoned as { err: unknown }).err;
      const m = this.#inbox.shift();
      if (m) {
        if (m.type === AgentType.ERROR) throw new PostcopyError(isErrorCode(m.code) ? m.code : 'ERR_REMOTE', `${this.peer || 'the agent'}: ${m.message}`);
        if (!(types as readonly AgentType[]).includes(m.type)) throw new PostcopyError('ERR_PROTOCOL', `${this.peer || 'the agent'} sent ${AgentType[m.type]} where ${types.map((t) => AgentType[t]).join(' or ')} was expected`);
        return m as MessageOf<T>;
      }
      if (this.#closed) throw this.#closed;
      const left = deadline - Date.now();
      if (left <= 0) throw new PostcopyError('ERR_TIMEOUT', `no ${types.map((t) => AgentType[t]).join(' or ')} from ${this.peer || 'the agent'} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.#waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.#waiters.add(wake);
      });
    }
  }

  #wake(): void {
    for (const wake of [...this.#waiters]) wake();
  }

  #end(err: PostcopyError): void {
    if (!this.#closed) this.#resolveEnded(err);
    this.#closed ??= err;
    this.#wake();
  }

  /**
   * The client's side of the opening: HELLO, the agent's WELCOME, and with a key, each side's
   * proof. A refused certificate (TLS 1.3 says so only by closing) is ERR_AUTH.
   */
  static async open(socket: Socket, name: string, key: PresharedKey | undefined, timeoutMs: number): Promise<AgentChannel> {
    const ch = new AgentChannel(socket);
    try {
      const nonce = randomBytes(NONCE);
      ch.send({ type: AgentType.HELLO, version: AGENT_PROTOCOL_VERSION, agent: name, ...(key ? { nonce: nonce.toString('hex'), keyId: key.keyId } : {}) });
      const welcome = await ch.next([AgentType.WELCOME], timeoutMs).catch((err: PostcopyError) => {
        if (err.code === 'ERR_PEER_CLOSED') throw new PostcopyError('ERR_AUTH', `the agent closed the connection before it said anything: it refuses this host (its certificate, or its key) or is no postcopy agent`);
        throw err;
      });
      ch.peer = welcome.agent;
      if (welcome.version !== AGENT_PROTOCOL_VERSION) throw new PostcopyError('ERR_VERSION', `agent ${welcome.agent} speaks version ${welcome.version} of the agent protocol, not ${AGENT_PROTOCOL_VERSION}`);
      if (key) {
        const agentNonce = Buffer.from(welcome.nonce ?? '', 'hex');
        if (agentNonce.length !== NONCE || !proofEquals(agentProof('agent', key.key, key.keyId, nonce, agentNonce), welcome.proof))
          throw new PostcopyError('ERR_AUTH', `agent ${welcome.agent} could not prove it holds key ${key.keyId}`);
        ch.send({ type: AgentType.AUTH, proof: agentProof('client', key.key, key.keyId, nonce, agentNonce).toString('hex') });
      }
      return ch;
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }

  /**
   * The agent's side: the client's HELLO, a WELCOME, and with a key, the client's proof checked.
   * `keys`: the keys a client may claim (none: the transport authenticates it).
   */
  static async accept(socket: Socket, name: string, keys: PresharedKey[], timeoutMs: number): Promise<AgentChannel> {
    const ch = new AgentChannel(socket);
    try {
      const hello = await ch.next([AgentType.HELLO], timeoutMs);
      ch.peer = hello.agent;
      if (hello.version !== AGENT_PROTOCOL_VERSION) throw new PostcopyError('ERR_VERSION', `this agent speaks version ${AGENT_PROTOCOL_VERSION} of the agent protocol, not ${hello.version}`);
      if (!keys.length) {
        ch.send({ type: AgentType.WELCOME, version: AGENT_PROTOCOL_VERSION, agent: name });
        return ch;
      }
      const key = keys.find((k) => k.keyId === hello.keyId);
      const clientNonce = Buffer.from(hello.nonce ?? '', 'hex');
      if (!key || clientNonce.length !== NONCE) throw new PostcopyError('ERR_AUTH', `a client (${hello.agent}) claims no key this agent holds`);
      const nonce = randomBytes(NONCE);
      ch.send({ type: AgentType.WELCOME, version: AGENT_PROTOCOL_VERSION, agent: name, nonce: nonce.toString('hex'), proof: agentProof('agent', key.key, key.keyId, clientNonce, nonce).toString('hex') });
      const auth = await ch.next([AgentType.AUTH], timeoutMs);
      if (!proofEquals(agentProof('client', key.key, key.keyId, clientNonce, nonce), auth.proof)) throw new PostcopyError('ERR_AUTH', `a client (${hello.agent}) could not prove it holds key ${key.keyId}`);
      return ch;
    } catch (err) {
      ch.fail((err as PostcopyError).code ?? 'ERR_PROTOCOL', (err as Error).message);
      throw err;
    }
  }
}
