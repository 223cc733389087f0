// `postcopy agent`: one per host. It is the source or the destination of migrations, several at
// once. Three doors:
//   - the agents' port (--listen): TLS with mutual certificates, or TCP with a pre-shared key;
//     another agent opens a migration to this host there (PREPARE);
//   - a Unix socket in its state directory (mode 0600: root's): `postcopy migrate --to` asks it to
//     move a task of this host (MIGRATE), and hears each phase and the result;
//   - plain HTTP (--metrics-listen): GET /metrics (Prometheus text) and GET /status (JSON).
// Every finished migration is appended to the ledger, state-dir/ledger.jsonl.
import { appendFileSync, chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import type { Socket } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { isErrorCode, PostcopyError } from '../errors.js';
import { AgentType, type MessageOf } from '../protocol/agent.js';
import { isName } from '../protocol/schema.js';
import type { PresharedKey } from '../protocol/auth.js';
import { AgentChannel } from '../transport/agent-channel.js';
import { formatEndpoint, parseEndpoint, transportFor, UnixTransport, type Endpoint, type Listener, type TlsMaterial } from '../transport/index.js';
import { silentLogger, type Logger } from '../util/log.js';
import { DestinationMigration } from './destination-host.js';
import { WorkingSetStore } from './working-sets.js';
import { AgentMetrics } from './metrics.js';
import { HostPower } from './energy.js';
import { DEFAULT_CLASSES } from '../util/power-model.js';
import { containerLoads } from './host-state.js';
import { SourceMigration, type RemoteMigrateResult } from './source-host.js';

export const DEFAULT_AGENT_PORT = 7070;
export const AGENT_SOCKET = 'agent.sock';
const HANDSHAKE_MS = 10_000;

export interface AgentOptions {
  /** tcp://HOST:PORT (with keys) or tls://HOST:PORT (with tls) */
  listen: Endpoint;
  tls?: TlsMaterial;
  /** pre-shared keys: the first is also what this agent proves when it connects to another */
  keys?: PresharedKey[];
  stateDir: string;
  /** tcp://HOST:PORT for GET /metrics and GET /status */
  metricsListen?: Endpoint;
  /** this host's name in logs, status and work directories (default: the host name) */
  name?: string;
  /** where runc keeps this host's containers, inside the CRIU root (default: in the agent's work root) */
  runcRoot?: string;
  /** this host's class, as the planner's energy model names it (docs/energy.md) */
  hostClass?: string;
  /** where RAPL's counters are (default /sys/class/powercap): /metrics reports measured power from them */
  powercap?: string;
  logger?: Logger;
}

/** A migration as GET /status shows it. */
export interface MigrationRecord {
  id: string;
  role: 'source' | 'destination';
  peer: string;
  pid?: number;
  container?: string;
  state: string;
  startedAt: string;
  endedAt?: string;
  phases?: { name: string; ms: number }[];
  result?: RemoteMigrateResult | Record<string, unknown>;
  /** a planner's forecast for this move, J over its horizon, and how it priced it */
  forecast?: { gainJ: number; costJ: number; threadW: number; nicJPerByte: number };
  /** what the move cost, J, by the energy model from the measured report (docs/energy.md) */
  measured?: { costJ: number };
  error?: { code: string; message: string; running?: string };
}

export class Agent {
  readonly name: string;
  readonly metrics = new AgentMetrics();
  readonly migrations = new Map<string, MigrationRecord>();
  #listeners: Listener[] = [];
  #http: HttpServer | null = null;
  #sockets = new Set<Socket>();
  #log: Logger;
  /** the working sets of the workloads that moved here (state dir/working-sets) */
  #workingSets: WorkingSetStore;
  #endpoint!: Endpoint;
  #metricsEndpoint: Endpoint | null = null;

  private constructor(readonly o: AgentOptions) {
    this.name = o.name ?? hostname();
    this.#log = (o.logger ?? silentLogger).child({ agent: this.name });
    this.#workingSets = new WorkingSetStore(join(o.stateDir, 'working-sets'), this.#log);
    // The host's power, and each container's share, sampled at each scrape of /metrics.
    const power = new HostPower(DEFAULT_CLASSES.find((c) => c.name === (o.hostClass ?? 'xeon-d-m510')) ?? null, o.powercap);
    if (power.available) this.metrics.reportPower(async () => power.sample(await containerLoads(this.name, this.runcRoot)));
  }

  /** Checks the options, then listens on every door; throws (nothing left listening) if one fails. */
  static async start(o: AgentOptions): Promise<Agent> {
    const agent = new Agent(o);
    if (!isName(agent.name)) throw new PostcopyError('ERR_INVALID_ARG', `agent name ${JSON.stringify(agent.name)}: 1 to 64 letters, digits, '.', '_' or '-'`);
    if (o.listen.kind === 'unix') throw new PostcopyError('ERR_INVALID_ARG', 'the agents\' port is tcp:// (with a key) or tls:// (with certificates), not a Unix socket');
    if (o.listen.kind === 'tls' && !o.tls) throw new PostcopyError('ERR_INVALID_ARG', 'a tls:// agent needs --tls-cert, --tls-key and --tls-ca');
    if (o.listen.kind === 'tcp' && !o.keys?.length) throw new PostcopyError('ERR_INVALID_ARG', 'a tcp:// agent needs a pre-shared key (--key-file): nothing else would say who connects');
    if (o.metricsListen && o.metricsListen.kind !== 'tcp') throw new PostcopyError('ERR_INVALID_ARG', '--metrics-listen is tcp://HOST:PORT (plain HTTP)');
    try {
      mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new PostcopyError('ERR_INVALID_ARG', `cannot make the state directory ${o.stateDir}: ${(err as Error).message}`);
    }
    try {
      const net = await transportFor(o.listen, o.tls).listen((s) => agent.#accept(s, 'network'));
      agent.#listeners.push(net);
      agent.#endpoint = net.endpoint;
      const socketPath = join(o.stateDir, AGENT_SOCKET);
      rmSync(socketPath, { force: true });
      agent.#listeners.push(await new UnixTransport(socketPath).listen((s) => agent.#accept(s, 'local')));
      chmodSync(socketPath, 0o600);
      if (o.metricsListen) agent.#metricsEndpoint = await agent.#serveHttp(o.metricsListen);
    } catch (err) {
      await agent.close();
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EADDRINUSE' || e.code === 'EADDRNOTAVAIL' || e.code === 'EACCES') throw new PostcopyError('ERR_INVALID_ARG', `cannot listen: ${e.message}`);
      throw err;
    }
    agent.#log.info({ listen: formatEndpoint(agent.#endpoint), metrics: agent.#metricsEndpoint && formatEndpoint(agent.#metricsEndpoint) }, 'agent listening');
    return agent;
  }

  get endpoint(): Endpoint {
    return this.#endpoint;
  }

  get metricsEndpoint(): Endpoint | null {
    return this.#metricsEndpoint;
  }

  get socketPath(): string {
    return join(this.o.stateDir, AGENT_SOCKET);
  }

  /** Where this agent's migrations keep their images and logs, inside the CRIU root. */
  get workRoot(): string {
    return `/var/lib/postcopy-agent/${this.name}`;
  }

  /** runc's state of this host's containers, inside the CRIU root */
  get runcRoot(): string {
    return this.o.runcRoot ?? `${this.workRoot}/runc`;
  }

  status(): { agent: string; listen: string; migrations: MigrationRecord[] } {
    return { agent: this.name, listen: formatEndpoint(this.#endpoint), migrations: [...this.migrations.values()] };
  }

  /** An authenticated channel to another agent: HOST[:PORT], or a full tcp:// or tls:// endpoint. */
  connect(to: string): Promise<AgentChannel> {
    return connectAgent(to, { name: this.name, tls: this.o.tls, key: this.o.keys?.[0] });
  }

  async close(): Promise<void> {
    for (const l of this.#listeners) await l.close().catch(() => {});
    this.#listeners = [];
    for (const s of this.#sockets) s.destroy();
    if (this.#http) await new Promise<void>((resolve) => this.#http!.close(() => resolve()));
    this.#http = null;
  }

  #accept(socket: Socket, door: 'network' | 'local'): void {
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    socket.on('error', () => {});
    void this.#converse(socket, door).catch((err: Error) => this.#log.warn({ err: err.message, door }, 'agent connection failed'));
  }

  async #converse(socket: Socket, door: 'network' | 'local'): Promise<void> {
    // TLS and the Unix socket (root's) authenticate the peer; plain TCP needs the key.
    const keys = door === 'network' && this.o.listen.kind === 'tcp' ? (this.o.keys ?? []) : [];
    const ch = await AgentChannel.accept(socket, this.name, keys, HANDSHAKE_MS);
    // The network door is the rack's (TLS or the key): another agent's PREPARE, or a planner's
    // STATE_REQUEST and MIGRATE; this host's CLI comes by the Unix socket.
    const first = await ch.next(door === 'local' ? [AgentType.MIGRATE, AgentType.STATE_REQUEST] : [AgentType.PREPARE, AgentType.MIGRATE, AgentType.STATE_REQUEST], HANDSHAKE_MS).catch((err: PostcopyError) => {
      ch.fail(err.code ?? 'ERR_PROTOCOL', err.message);
      throw err;
    });
    if (first.type === AgentType.MIGRATE) return this.#asSource(ch, first);
    if (first.type === AgentType.STATE_REQUEST) {
      ch.send({ type: AgentType.STATE, agent: this.name, hostClass: this.o.hostClass ?? 'xeon-d-m510', containers: await containerLoads(this.name, this.runcRoot) });
      ch.close();
      return;
    }
    return this.#asDestination(ch, first);
  }

  async #asSource(ch: AgentChannel, m: MessageOf<AgentType.MIGRATE>): Promise<void> {
    const migration = new SourceMigration(m, { name: this.name, workRoot: this.workRoot, runcRoot: this.runcRoot, connect: (to) => this.connect(to), metrics: this.metrics, logger: this.#log, workingSets: this.#workingSets }, (name, ms) => {
      if (!ch.closed) ch.send({ type: AgentType.PHASE, name, ms });
    });
    const record: MigrationRecord = { id: migration.id, role: 'source', peer: m.to, ...(m.pid !== undefined ? { pid: m.pid } : { container: m.container }), state: 'running', startedAt: new Date().toISOString(), phases: migration.phases, ...(m.forecast ? { forecast: m.forecast } : {}) };
    this.migrations.set(migration.id, record);
    this.metrics.started.inc({ role: 'source' });
    try {
      const result = await migration.run();
      Object.assign(record, { state: 'done', result, ...(m.forecast ? { measured: { costJ: measuredCostJ(result, m.forecast) } } : {}) });
      if (record.measured) this.metrics.migrationEnergy.inc(record.measured.costJ);
      this.metrics.succeeded.inc({ role: 'source' });
      this.metrics.downtime.observe(result.downtime_ms / 1000);
      this.metrics.allPresent.observe(result.all_present_ms / 1000);
      this.metrics.bytes.inc(result.bytes_sent);
      if (!ch.closed) ch.send({ type: AgentType.RESULT, ok: true, result: result as unknown as Record<string, unknown> });
    } catch (err) {
      const e = err as PostcopyError & { running?: string };
      const code = e.code ?? 'ERR_CRIU';
      Object.assign(record, { state: 'failed', error: { code, message: e.message, running: e.running } });
      this.metrics.failed.inc({ role: 'source', code });
      if (!ch.closed) ch.send({ type: AgentType.RESULT, ok: false, code, message: e.message, running: e.running ?? 'original' });
    } finally {
      record.endedAt = new Date().toISOString();
      this.#ledger(record);
      ch.close();
    }
  }

  async #asDestination(ch: AgentChannel, prepare: MessageOf<AgentType.PREPARE>): Promise<void> {
    if (this.migrations.has(prepare.migration)) {
      ch.fail('ERR_INVALID_ARG', `migration ${prepare.migration} is known here already`);
      return;
    }
    const migration = new DestinationMigration(prepare, ch, { name: this.name, workRoot: this.workRoot, runcRoot: this.runcRoot, metrics: this.metrics, logger: this.#log, workingSets: this.#workingSets });
    const record: MigrationRecord = { id: migration.id, role: 'destination', peer: ch.peer, state: 'preparing', startedAt: new Date().toISOString(), ...(prepare.container !== undefined ? { container: prepare.container } : {}) };
    // GET /status sees the migration's state as it goes, not only at its end.
    Object.defineProperty(record, 'state', { get: () => migration.state, enumerable: true, configurable: true });
    this.migrations.set(migration.id, record);
    this.metrics.started.inc({ role: 'destination' });
    await migration.run();
    Object.defineProperty(record, 'state', { value: migration.state, enumerable: true, writable: true, configurable: true });
    Object.assign(record, { endedAt: new Date().toISOString(), ...(migration.report ? { result: { restoredPid: migration.restoredPid, ...migration.report } } : {}), ...(migration.error ? { error: migration.error } : {}) });
    if (migration.state === 'committed') this.metrics.succeeded.inc({ role: 'destination' });
    else this.metrics.failed.inc({ role: 'destination', code: migration.error?.code ?? 'ERR_CRIU' });
    this.#ledger(record);
  }

  #ledger(record: MigrationRecord): void {
    try {
      appendFileSync(join(this.o.stateDir, 'ledger.jsonl'), `${JSON.stringify(record)}\n`);
    } catch (err) {
      this.#log.error({ err: (err as Error).message }, 'cannot write the ledger');
    }
  }

  async #serveHttp(endpoint: Endpoint & { kind: 'tcp' }): Promise<Endpoint> {
    const server = createHttpServer((req, res) => {
      const reply = (status: number, type: string, body: string) => res.writeHead(status, { 'content-type': type }).end(body);
      if (req.method !== 'GET') return reply(405, 'text/plain', 'GET only\n');
      if (req.url === '/metrics') {
        this.metrics.text().then((text) => reply(200, this.metrics.registry.contentType, text), (err: Error) => reply(500, 'text/plain', `${err.message}\n`));
      } else if (req.url === '/status') reply(200, 'application/json', `${JSON.stringify(this.status())}\n`);
      else reply(404, 'text/plain', 'GET /metrics or /status\n');
    });
    this.#http = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(endpoint.port, endpoint.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return { kind: 'tcp', host: endpoint.host, port: (server.address() as { port: number }).port };
  }
}

/** HOST, HOST:PORT, [IPv6]:PORT, or a full tcp:// or tls:// endpoint; the agents' port by default. */
export function peerEndpoint(to: string, kind: 'tcp' | 'tls'): Endpoint & { kind: 'tcp' | 'tls' } {
  if (/^(tcp|tls):\/\//.test(to)) return parseEndpoint(to) as Endpoint & { kind: 'tcp' | 'tls' };
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+|localhost))(?::(\d{1,5}))?$/.exec(to);
  if (!m) throw new PostcopyError('ERR_INVALID_ARG', `--to ${to}: HOST[:PORT] (HOST numeric), or tcp:// or tls://HOST:PORT`);
  const host = m[1] ?? m[2];
  const port = m[3] === undefined ? DEFAULT_AGENT_PORT : Number(m[3]);
  if (!(port >= 1 && port <= 65535)) throw new PostcopyError('ERR_INVALID_ARG', `--to ${to}: port ${port} is not 1 to 65535`);
  return parseEndpoint(`${kind}://${host.includes(':') ? `[${host}]` : host}:${port}`) as Endpoint & { kind: 'tcp' | 'tls' };
}

/**
 * An authenticated channel to an agent at HOST[:PORT] (or a full tcp:// or tls:// endpoint): TLS
 * with these certificates, or plain TCP with this key.
 */
export async function connectAgent(to: string, me: { name: string; tls?: TlsMaterial; key?: PresharedKey }): Promise<AgentChannel> {
  const endpoint = peerEndpoint(to, me.tls ? 'tls' : 'tcp');
  if (endpoint.kind === 'tls' && !me.tls) throw new PostcopyError('ERR_INVALID_ARG', `${to}: no certificate for tls://`);
  let socket: Socket;
  try {
    socket = await transportFor(endpoint, me.tls).connect();
  } catch (err) {
    throw new PostcopyError('ERR_PEER_CLOSED', `cannot reach the agent at ${formatEndpoint(endpoint)}: ${(err as Error).message}`);
  }
  return AgentChannel.open(socket, me.name, endpoint.kind === 'tcp' ? me.key : undefined, HANDSHAKE_MS);
}

/** An agent's state (its class, its containers' load), asked on an open channel. */
export async function askState(ch: AgentChannel): Promise<MessageOf<AgentType.STATE>> {
  try {
    ch.send({ type: AgentType.STATE_REQUEST });
    return await ch.next([AgentType.STATE], HANDSHAKE_MS * 3);
  } finally {
    ch.close();
  }
}

/**
 * `postcopy migrate --to`: asks this host's agent (its Unix socket) to move task pid, and reports
 * each phase as the agent says it. Resolves with the result; throws a PostcopyError with `running`.
 */
export async function migrateThroughAgent(
  socketPath: string,
  request: { pid?: number; container?: string; runcRoot?: string; to: string; checksums?: boolean; push?: boolean; timeoutMs?: number },
  onPhase: (name: string, ms: number) => void = () => {},
): Promise<RemoteMigrateResult> {
  let socket: Socket;
  try {
    socket = await new UnixTransport(socketPath).connect();
  } catch (err) {
    throw Object.assign(new PostcopyError('ERR_PEER_CLOSED', `no agent on ${socketPath} (is \`postcopy agent\` running, with this --state-dir?): ${(err as Error).message}`), { running: 'original' });
  }
  return migrateOver(await AgentChannel.open(socket, 'cli', undefined, HANDSHAKE_MS), request, onPhase);
}

/** Asks the agent at the other end of ch to move a task (MIGRATE), reports its phases, and returns its result. */
export async function migrateOver(
  ch: AgentChannel,
  request: Omit<MessageOf<AgentType.MIGRATE>, 'type'>,
  onPhase: (name: string, ms: number) => void = () => {},
): Promise<RemoteMigrateResult> {
  try {
    ch.send({ type: AgentType.MIGRATE, ...request });
    const limit = (request.timeoutMs ?? 120_000) * 4 + 60_000;
    for (;;) {
      const m = await ch.next([AgentType.PHASE, AgentType.RESULT], limit);
      if (m.type === AgentType.PHASE) {
        onPhase(m.name, m.ms);
        continue;
      }
      if (m.ok) return m.result as unknown as RemoteMigrateResult;
      throw Object.assign(new PostcopyError(isErrorCode(m.code) ? m.code : 'ERR_REMOTE', m.message ?? 'the migration failed'), { running: m.running });
    }
  } finally {
    // An error without `running` (the agent's answer lost): the agent still runs the migration to
    // an end of its own (see its /status), and the CLI says which copy runs is not known.
    ch.close();
  }
}

/**
 * What a migration cost, J, priced as the planner priced its forecast (a busy thread's power, the
 * NIC's energy per byte: the planner sends them, so that no model lives here), from the measured
 * report: a thread on each end for as long as pages moved, the bytes, and the downtime.
 */
export function measuredCostJ(r: RemoteMigrateResult, price: { threadW: number; nicJPerByte: number }): number {
  return 2 * price.threadW * (r.all_present_ms / 1000) + price.nicJPerByte * r.bytes_sent + price.threadW * (r.downtime_ms / 1000);
}
