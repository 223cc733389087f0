// Agents on two hosts: each host a network namespace of its own with its own agent and state
// directory, joined to the other by a veth pair and nothing else. `postcopy migrate --to` on one
// moves a task to the other; /metrics is read with a Prometheus text parser.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { startInRoot } from '../src/bench/criu-bench.js';
import { ensureCriuRoot } from '../src/criu/root.js';
import { LineChild } from '../src/util/child.js';
import { GATE_HELD } from '../src/criu/criu-gate.js';
import { parseWorkingSet } from '../src/protocol/working-set.js';
import { VethPair } from '../src/util/netns.js';
import { caps, need } from './helpers/caps.js';
import { makeCerts, type TestCerts } from './helpers/certs.js';
import { containerStatus, inRootSync, makeBundle, removeContainer, startContainer } from './helpers/container.js';
import { CLI, taskState, waitForLines } from './helpers/util.js';

const ROOT = process.env.POSTCOPY_CRIU_ROOT ?? '/var/cache/postcopy/trixie';
const RUNC_A = '/var/lib/postcopy-agent/host-a/runc';
const RUNC_B = '/var/lib/postcopy-agent/host-b/runc';
const TSX = [process.execPath, '--import', 'tsx', CLI];
const AGENT_PORT = 7070;
const METRICS_PORT = 9100;

interface Host {
  end: 'a' | 'b';
  addr: string;
  stateDir: string;
  agent: LineChild;
}

/** GET url from inside a host's namespace (the test itself is on neither host). */
function httpGet(veth: VethPair, end: 'a' | 'b', url: string): string {
  const r = spawnSync(veth.exec(end)[0], [...veth.exec(end).slice(1), process.execPath, '-e', `fetch(${JSON.stringify(url)}).then(r => r.text()).then(t => process.stdout.write(t), e => { console.error(e.message); process.exit(1); })`], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** A metric's value from parsed Prometheus text (a counter's, or a histogram's count), labels matching. */
function metric(families: { name: string; metrics: { value?: string; count?: string; labels?: Record<string, string> }[] }[], name: string, labels: Record<string, string> = {}): number {
  const family = families.find((f) => f.name === name);
  if (!family) return 0;
  return family.metrics
    .filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
    .reduce((n, m) => n + Number(m.value ?? m.count ?? 0), 0);
}

/**
 * memproc writing to `out` (inside the CRIU root) runs on: `more` self-checks after this call, each
 * one right (every page it reads is the page it wrote).
 */
async function checksRight(out: string, more: number, what: string, ms = 20_000): Promise<void> {
  const file = join(ROOT, out, 'out.txt');
  const before = (await waitForLines(file, () => true, 0)).filter(Boolean).length;
  const lines = await waitForLines(file, (l) => l.length >= before + more, ms);
  assert.ok(lines.length >= before + more, `${what} runs on`);
  assert.deepEqual(lines.filter((l) => !l.startsWith('ok ')), [], `${what}: every self-check passes`);
}

/** The memproc processes writing into dir: one, the original, and no copy of it anywhere. */
function onlyOriginal(dir: string, original: number): void {
  const copies = spawnSync('pgrep', ['-x', 'memproc'], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean).map(Number);
  assert.deepEqual(copies.filter((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)), [original], 'one copy: the original');
}

/** GET path from an HTTP server on a unix socket: the body (bounded in time). */
function getOverUnix(socketPath: string, path: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // No keep-alive: an open connection from outside the container is a socket CRIU cannot dump.
    const req = httpRequest({ socketPath, path, timeout: 20_000, agent: false, headers: { connection: 'close' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks)) : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error('no answer in 20 s')));
    req.on('error', reject);
    req.end();
  });
}



/** `postcopy migrate --to` on host a (asynchronous: the test acts meanwhile); its JSON result line (ok or not) and exit status. */
/** SIGKILLs an agent the moment task `pid` is stopped (frozen by its dump), within 60 s; whether it did. */
async function killOnceStopped(pid: number, agent: LineChild): Promise<boolean> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (['t', 'T'].includes(taskState(pid))) {
      agent.child.kill('SIGKILL');
      return true;
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  return false;
}

async function migrateTo(stateDir: string, pid: number, to: string, extra: string[] = []): Promise<{ status: number | null; result: Record<string, unknown>; stderr: string }> {
  const child = spawn(TSX[0], [...TSX.slice(1), 'migrate', ...(pid ? ['--pid', String(pid)] : []), '--to', to, '--state-dir', stateDir, '--json', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
  const status = await new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  clearTimeout(timer);
  const line = stdout.trim().split('\n').pop() ?? '';
  let result: Record<string, unknown> = {};
  try {
    result = JSON.parse(line);
  } catch {
    // no JSON: the assertion below says what came instead
  }
  return { status, result, stderr };
}

describe('agents on two hosts', () => {
  let veth: VethPair | null = null;
  const hosts: Host[] = [];
  const tmp = mkdtempSync(join(tmpdir(), 'pc-agents-'));
  const keyFile = join(tmp, 'rack.key');
  const tag = `pcg${process.pid % 10000}`;
  const startAgent = async (end: 'a' | 'b', args: string[], criuRoot?: string) => {
    const addr = veth!.exec(end) && veth![end].addr;
    const stateDir = join(tmp, `state-${end}-${hosts.length}`);
    const agent = new LineChild(`agent ${end}`, [...veth!.exec(end), ...(criuRoot ? ['env', `POSTCOPY_CRIU_ROOT=${criuRoot}`] : []), ...TSX, 'agent', '--state-dir', stateDir, '--name', `host-${end}`, '--metrics-listen', `tcp://${addr}:${METRICS_PORT}`, '--json', ...args]);
    const line = await agent.next((l) => l.includes('"listening"'), 60_000);
    assert.match(line, new RegExp(`host-${end}`));
    const host = { end, addr, stateDir, agent };
    hosts.push(host);
    return host;
  };
  const stopAgents = async () => {
    for (const h of hosts.splice(0)) {
      h.agent.child.kill('SIGTERM');
      await Promise.race([h.agent.exited, new Promise((r) => setTimeout(r, 5000))]);
      h.agent.kill();
    }
  };

  /** the rack's CA, a certificate for each host, and a stranger's signed by another CA */
  let certs: TestCerts;
  const tls = (who: 'source' | 'target' | 'stranger') => {
    const f = who === 'stranger' ? { cert: join(certs.dir, 'stranger.pem'), key: join(certs.dir, 'stranger.key'), ca: certs.files('source').ca } : certs.files(who);
    return ['--tls-cert', f.cert, '--tls-key', f.key, '--tls-ca', f.ca];
  };
  const psk = (end: 'a' | 'b') => ['--listen', `tcp://${veth![end].addr}:${AGENT_PORT}`, '--key-file', keyFile];

  /** Host b with a CRIU root of its own: the same system hard-linked, with nothing of host a's (no bundle, no work directory). */
  const separateRoot = () => {
    const rootB = `${ROOT}-pc${process.pid}`;
    rmSync(rootB, { recursive: true, force: true });
    const cp = spawnSync('cp', ['-al', ROOT, rootB]);
    assert.equal(cp.status, 0, String(cp.stderr));
    for (const old of ['var/lib/postcopy', 'var/lib/postcopy-agent']) rmSync(join(rootB, old), { recursive: true, force: true });
    return rootB;
  };

  /**
   * A test on two fresh hosts: the namespaces, an agent on each (tcp:// with the rack's key, unless
   * `agents` says otherwise; host b in a CRIU root of its own with `separateRoot`), then body. The
   * agents are stopped, the namespaces and a separate root removed after it, whatever happened.
   */
  const onTwoHosts = (name: string, body: (h: { a: Host; b: Host; rootB?: string }) => Promise<void>, opts: { agents?: () => { a: string[]; b: string[] }; separateRoot?: boolean } = {}) =>
    it(name, async (t) => {
      if (!need(t, caps.root && caps.uffd.ok && caps.netns.ok, `${caps.uffd.detail}; ${caps.netns.detail}`)) return;
      ensureCriuRoot();
      veth = VethPair.create(tag, '10.236.0');
      const rootB = opts.separateRoot ? separateRoot() : undefined;
      try {
        const args = opts.agents?.() ?? { a: psk('a'), b: psk('b') };
        const a = await startAgent('a', args.a);
        const b = await startAgent('b', args.b, rootB);
        await body({ a, b, rootB });
      } finally {
        await stopAgents();
        veth?.destroy();
        veth = null;
        if (rootB) rmSync(rootB, { recursive: true, force: true });
      }
    });

  /**
   * A memproc container of `mib` MiB run by runc on host a, returned once its first self-check is
   * written; `out` (inside the CRIU root) holds its out.txt. If it does not start, what was made
   * is removed; `remove` takes it off both hosts.
   */
  const memprocContainer = async (name: string, mib: number): Promise<{ id: string; out: string; init: number; remove: () => void }> => {
    const id = `${name}-${process.pid}`;
    const bundle = `/var/lib/postcopy/bundles/${id}`;
    const out = `/var/lib/postcopy/${id}-out`;
    const remove = (): void => {
      removeContainer('host-a', RUNC_A, id);
      removeContainer('host-b', RUNC_B, id);
      rmSync(join(ROOT, bundle), { recursive: true, force: true });
      rmSync(join(ROOT, out), { recursive: true, force: true });
    };
    try {
      mkdirSync(join(ROOT, out), { recursive: true });
      makeBundle(bundle, ['/bin/sh', '-c', `exec /usr/local/bin/memproc ${mib} ${out}/out.txt </dev/null >/dev/null 2>&1`], [out]);
      startContainer('host-a', RUNC_A, bundle, id, veth!.exec('a'));
      await waitForLines(join(ROOT, out, 'out.txt'), (l) => l.length >= 1 && l[0] !== '', 30_000);
      return { id, out, init: containerStatus('host-a', RUNC_A, id)!.pid, remove };
    } catch (e) {
      remove();
      throw e;
    }
  };

  before(() => {
    writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
    certs = makeCerts();
  });
  after(async () => {
    await stopAgents();
    veth?.destroy();
    rmSync(tmp, { recursive: true, force: true });
    if (certs) rmSync(certs.dir, { recursive: true, force: true });
  });

  onTwoHosts('moves a process from one host to the other with one command; the restored copy runs alone, in the other host\'s namespace, and /metrics counts it', async ({ a, b }) => {
    const dir = `/var/lib/postcopy/agent-move-${process.pid}`;
    let original = 0;
    let restored = 0;
    try {
      original = await startInRoot(dir, `/usr/local/bin/memproc 128 ${dir}/out.txt`, `[ -s ${dir}/out.txt ]`, 'memproc', veth!.exec('a'));
      const before = readFileSync(join(ROOT, dir, 'out.txt'), 'utf8').trim().split('\n').length;
      const { status, result, stderr } = await migrateTo(a.stateDir, original, veth!.b.addr);
      assert.equal(status, 0, `${JSON.stringify(result)} ${stderr}`);
      if (process.env.POSTCOPY_TEST_VERBOSE) console.log(JSON.stringify(result));
      assert.equal(result.ok, true);
      assert.equal(result.running, 'restored');
      restored = result.restoredPid as number;
      assert.ok(restored > 0 && restored !== original, JSON.stringify(result));
      assert.ok((result.bytes_sent as number) >= 128 << 20, JSON.stringify(result));
      assert.ok((result.downtime_ms as number) > 0 && (result.all_present_ms as number) >= (result.downtime_ms as number), JSON.stringify(result));
      const phases = (result.phases as { name: string }[]).map((p) => p.name);
      for (const p of ['destination ready', 'dumped', 'images sent', 'restored', 'all pages present', 'released']) assert.ok(phases.includes(p), phases.join(', '));
      // Exactly one copy, on host b.
      assert.ok(['gone', 'Z', 'X'].includes(taskState(original)), `the original is gone (state ${taskState(original)})`);
      assert.notEqual(taskState(restored), 'gone');
      assert.equal(readlinkSync(`/proc/${restored}/ns/net`), readlinkSync(`/proc/${b.agent.child.pid}/ns/net`), 'the restored task runs in host b\'s network namespace');
      const lines = await waitForLines(join(ROOT, dir, 'out.txt'), (l) => l.length >= before + 3, 20_000);
      assert.ok(lines.length >= before + 3, 'the restored process runs on');
      assert.deepEqual(lines.filter((l) => !l.startsWith('ok ')), [], 'every self-check of the restored process passes');
      // Each agent counted it; the destination's fault histogram holds the faults it served.
      const ma = parsePrometheusTextFormat(httpGet(veth, 'a', `http://${a.addr}:${METRICS_PORT}/metrics`));
      const mb = parsePrometheusTextFormat(httpGet(veth, 'b', `http://${b.addr}:${METRICS_PORT}/metrics`));
      assert.equal(metric(ma, 'postcopy_migrations_started_total', { role: 'source' }), 1);
      assert.equal(metric(ma, 'postcopy_migrations_succeeded_total', { role: 'source' }), 1);
      assert.equal(metric(ma, 'postcopy_migrations_failed_total'), 0);
      assert.equal(metric(ma, 'postcopy_bytes_sent_total'), result.bytes_sent);
      assert.equal(metric(ma, 'postcopy_downtime_seconds'), 1);
      assert.equal(metric(mb, 'postcopy_migrations_started_total', { role: 'destination' }), 1);
      assert.equal(metric(mb, 'postcopy_migrations_succeeded_total', { role: 'destination' }), 1);
      assert.equal(metric(mb, 'postcopy_pages_faulted_total'), result.faulted);
      assert.equal(metric(mb, 'postcopy_pages_pushed_total'), result.pushed);
      assert.ok(metric(mb, 'postcopy_fault_latency_seconds') >= ((result.faulted as number) > 0 ? 1 : 0), 'the fault-latency histogram holds the faults served');
      const status_ = JSON.parse(httpGet(veth, 'b', `http://${b.addr}:${METRICS_PORT}/status`)) as { migrations: { id: string; state: string; role: string }[] };
      assert.deepEqual(status_.migrations.map((m) => [m.id, m.role, m.state]), [[result.migration, 'destination', 'committed']]);
      const ledger = readFileSync(join(a.stateDir, 'ledger.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.equal(ledger.length, 1);
      assert.equal(ledger[0].state, 'done');
      assert.equal(ledger[0].result.restoredPid, restored);
    } finally {
      for (const pid of [original, restored]) if (pid > 0) spawnSync('kill', ['-9', String(pid)]);
      rmSync(join(ROOT, dir), { recursive: true, force: true });
    }
  });

  onTwoHosts('moves a runc container from one host to the other with one command: it runs there, from the same bundle, and is gone here', async ({ a, b }) => {
    const c = await memprocContainer('pc-test', 256);
    const id = c.id;
    try {
      const before = (await waitForLines(join(ROOT, c.out, 'out.txt'), () => true, 0)).length;
      const { status, result, stderr } = await migrateTo(a.stateDir, 0, veth!.b.addr, ['--container', id]);
      if (process.env.POSTCOPY_TEST_VERBOSE) console.log(JSON.stringify(result));
      assert.equal(status, 0, `${JSON.stringify(result)} ${stderr}`);
      assert.equal(result.running, 'restored');
      assert.ok((result.bytes_sent as number) >= 256 << 20, JSON.stringify(result));
      assert.equal(containerStatus('host-b', RUNC_B, id)?.status, 'running', 'runc on host b says the container runs');
      assert.equal(containerStatus('host-a', RUNC_A, id), null, 'the container is gone from host a');
      assert.ok(['gone', 'Z', 'X'].includes(taskState(c.init)), `the original init is gone (state ${taskState(c.init)})`);
      const restored = containerStatus('host-b', RUNC_B, id)!.pid;
      assert.equal(restored, result.restoredPid);
      const lines = await waitForLines(join(ROOT, c.out, 'out.txt'), (l) => l.length >= before + 3, 20_000);
      assert.ok(lines.length >= before + 3, 'the restored container runs on');
      assert.deepEqual(lines.filter((l) => !l.startsWith('ok ')), [], 'every self-check of the restored container passes');
      const mb = parsePrometheusTextFormat(httpGet(veth, 'b', `http://${b.addr}:${METRICS_PORT}/metrics`));
      assert.equal(metric(mb, 'postcopy_migrations_succeeded_total', { role: 'destination' }), 1);
      // No RAPL on this VM: host b's power by its class's model (27 W idle and 40 W of chassis at
      // least), and the container's share of it (it computes checksums: some CPU).
      assert.ok(metric(mb, 'postcopy_host_power_watts', { source: 'model' }) >= 67, 'host b draws what its class says');
      assert.ok(metric(mb, 'postcopy_container_power_watts', { container: id }) > 0, 'the container has its share of it');
    } finally {
      c.remove();
    }
  });

  onTwoHosts('a container moved there and back: the agent it moved to keeps its working set, and the move back pushes those pages first', async ({ a, b }) => {
    const c = await memprocContainer('pc-ws', 64);
    const id = c.id;
    const record = (stateDir: string) => join(stateDir, 'working-sets', `container-${id}.json`);
    try {
      const there = await migrateTo(a.stateDir, 0, veth!.b.addr, ['--container', id]);
      assert.equal(there.status, 0, JSON.stringify(there.result));
      const first = there.result.working_set as { replayed: number; recorded: number };
      assert.equal(first.replayed, 0, 'nothing to replay the first time');
      assert.ok(first.recorded > 0, `the first move recorded the pages that faulted (${JSON.stringify(first)})`);
      assert.ok(existsSync(record(b.stateDir)), 'host b keeps the record of the container that moved there');
      const kept = parseWorkingSet(readFileSync(record(b.stateDir), 'utf8'));
      assert.equal([...kept.tasks.values()].reduce((n, p) => n + p.length, 0), first.recorded);
      const back = await migrateTo(b.stateDir, 0, veth!.a.addr, ['--container', id]);
      assert.equal(back.status, 0, JSON.stringify(back.result));
      const second = back.result.working_set as { replayed: number; recorded: number };
      assert.equal(second.replayed, first.recorded, 'the move back pushed the recorded pages first');
      assert.equal(existsSync(record(b.stateDir)), false, 'the record left host b with the container');
      assert.ok(existsSync(record(a.stateDir)), 'host a keeps it now');
      assert.equal(containerStatus('host-a', RUNC_A, id)?.status, 'running');
      assert.equal(containerStatus('host-b', RUNC_B, id), null);
      await checksRight(c.out, 2, 'the container, there and back,');
    } finally {
      c.remove();
    }
  });

  /**
   * Host b with a CRIU root of its own (the same system, hard-linked: no bundle, no work directory,
   * nothing of host a's), and a redis container (keys) on host a.
   */
  const redisOnTwoRoots = async (a: Host, b: Host, rootB: string, keys: number) => {
    const id = `pc-redis-${process.pid}`;
    const bundle = `/var/lib/postcopy/bundles/${id}`;
    const data = `/var/lib/postcopy/${id}-data`;
    mkdirSync(join(ROOT, data), { recursive: true });
    makeBundle(bundle, ['/bin/sh', '-c', `exec redis-server --port 0 --unixsocket ${data}/redis.sock --save '' --appendonly no --enable-debug-command yes </dev/null >/dev/null 2>&1`], [data]);
    startContainer('host-a', RUNC_A, bundle, id, veth!.exec('a'));
    const deadline = Date.now() + 30_000;
    while (!existsSync(join(ROOT, data, 'redis.sock')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const digest = inRootSync(`redis-cli -s ${data}/redis.sock DEBUG POPULATE ${keys} key 100 >/dev/null && redis-cli -s ${data}/redis.sock DEBUG DIGEST`).at(-1)!;
    assert.match(digest, /^[0-9a-f]{40}$/);
    return {
      a, b, id, bundle, data, rootB, digest,
      runcA: RUNC_A,
      runcB: RUNC_B,
      cleanup: () => {
        removeContainer('host-a', RUNC_A, id);
        removeContainer('host-b', RUNC_B, id, rootB);
        rmSync(join(ROOT, bundle), { recursive: true, force: true });
        rmSync(join(ROOT, data), { recursive: true, force: true });
      },
    };
  };

  onTwoHosts('moves a redis container of 1M keys to a host without its bundle, with --copy-bundle: the digest is equal, runc runs it there, and it is gone here', async ({ a, b, rootB }) => {
    const keys = Number(process.env.POSTCOPY_REDIS_KEYS ?? 1_000_000);
    let h: Awaited<ReturnType<typeof redisOnTwoRoots>> | null = null;
    try {
      h = await redisOnTwoRoots(a, b, rootB!, keys);
      mkdirSync(join(h.rootB, h.data), { recursive: true }); // its data volume: there on both hosts
      const { status, result, stderr } = await migrateTo(h.a.stateDir, 0, veth!.b.addr, ['--container', h.id, '--copy-bundle']);
      if (process.env.POSTCOPY_TEST_VERBOSE) console.log(JSON.stringify(result));
      assert.equal(status, 0, `${JSON.stringify(result)} ${stderr}`);
      assert.equal(result.running, 'restored');
      const phases = (result.phases as { name: string }[]).map((p) => p.name);
      assert.ok(phases.some((p) => p.startsWith('bundle sent')) && phases.some((p) => p.startsWith('bundle changes sent')), phases.join(', '));
      assert.ok(existsSync(join(h.rootB, h.bundle, 'config.json')), 'the bundle was copied to host b');
      assert.equal(containerStatus('host-b', h.runcB, h.id, h.rootB)?.status, 'running', 'runc on host b says the container runs');
      assert.equal(containerStatus('host-a', h.runcA, h.id), null, 'the container is gone from host a');
      const after = inRootSync(`redis-cli -s ${h.data}/redis.sock DEBUG DIGEST`, h.rootB).at(-1);
      assert.equal(after, h.digest, 'the same dataset, served on host b');
      assert.equal(inRootSync(`redis-cli -s ${h.data}/redis.sock DBSIZE`, h.rootB).at(-1), String(keys));
    } finally {
      h?.cleanup();
    }
  }, { separateRoot: true });

  onTwoHosts('a destination without the bundle, and no --copy-bundle: a clear ERR_INVALID_ARG, and the container runs on here, untouched', async ({ a, b, rootB }) => {
    let h: Awaited<ReturnType<typeof redisOnTwoRoots>> | null = null;
    try {
      h = await redisOnTwoRoots(a, b, rootB!, 10_000);
      const { status, result } = await migrateTo(h.a.stateDir, 0, veth!.b.addr, ['--container', h.id]);
      assert.notEqual(status, 0);
      assert.equal(result.code, 'ERR_INVALID_ARG', JSON.stringify(result));
      assert.match(String(result.message), /no bundle at/);
      assert.equal(result.running, 'original');
      assert.equal(containerStatus('host-a', h.runcA, h.id)?.status, 'running', 'the container runs on host a');
      assert.equal(containerStatus('host-b', h.runcB, h.id, h.rootB), null, 'nothing of it on host b');
      assert.equal(inRootSync(`redis-cli -s ${h.data}/redis.sock DEBUG DIGEST`).at(-1), h.digest, 'its dataset is whole');
    } finally {
      h?.cleanup();
    }
  }, { separateRoot: true });

  onTwoHosts('moves an nginx container (a master and two workers) serving a 4 MiB file over a unix socket: the file served after the move is byte-identical', async ({ a, b }) => {
    const id = `pc-nginx-${process.pid}`;
    const bundle = `/var/lib/postcopy/bundles/${id}`;
    const data = `/var/lib/postcopy/${id}-data`;
    try {
      mkdirSync(join(ROOT, data, 'www'), { recursive: true });
      const file = randomBytes(4 << 20);
      writeFileSync(join(ROOT, data, 'www', 'file'), file);
      writeFileSync(join(ROOT, data, 'nginx.conf'), [
        'daemon off; master_process on; worker_processes 2; user root; pid /tmp/nginx.pid; error_log /tmp/error.log;',
        'events { worker_connections 64; }',
        `http { access_log off; client_body_temp_path /tmp/body; proxy_temp_path /tmp/proxy; fastcgi_temp_path /tmp/fcgi; uwsgi_temp_path /tmp/uwsgi; scgi_temp_path /tmp/scgi;`,
        `  server { listen unix:${data}/nginx.sock; root ${data}/www; } }`,
      ].join('\n'));
      makeBundle(bundle, ['/bin/sh', '-c', `exec /usr/sbin/nginx -c ${data}/nginx.conf </dev/null >/dev/null 2>&1`], [data]);
      startContainer('host-a', RUNC_A, bundle, id, veth!.exec('a'));
      const socketPath = join(ROOT, data, 'nginx.sock');
      const deadline = Date.now() + 30_000;
      while (!existsSync(socketPath) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const before = await getOverUnix(socketPath, '/file');
      assert.ok(before.equals(file), 'nginx serves the file before the move');
      const { status, result, stderr } = await migrateTo(a.stateDir, 0, veth!.b.addr, ['--container', id]);
      if (process.env.POSTCOPY_TEST_VERBOSE) console.log(JSON.stringify(result));
      assert.equal(status, 0, `${JSON.stringify(result)} ${stderr}`);
      assert.equal(result.tasks, 3, 'a master and two workers, each served by a handler of its own');
      assert.equal(containerStatus('host-b', RUNC_B, id)?.status, 'running');
      assert.equal(containerStatus('host-a', RUNC_A, id), null);
      for (let i = 0; i < 3; i++) assert.ok((await getOverUnix(socketPath, '/file')).equals(file), `request ${i} after the move: the same 4 MiB`);
    } finally {
      removeContainer('host-a', RUNC_A, id);
      removeContainer('host-b', RUNC_B, id);
      rmSync(join(ROOT, bundle), { recursive: true, force: true });
      rmSync(join(ROOT, data), { recursive: true, force: true });
    }
  });

  onTwoHosts('the destination agent SIGKILLed once it is ready to restore: the migration fails, and the task runs on at the source, whole', async ({ a, b }) => {
    const dir = `/var/lib/postcopy/agent-kill-${process.pid}`;
    const destRoot = join(ROOT, 'var/lib/postcopy-agent/host-b');
    rmSync(destRoot, { recursive: true, force: true });
    let original = 0;
    try {
      original = await startInRoot(dir, `/usr/local/bin/memproc 64 ${dir}/out.txt`, `[ -s ${dir}/out.txt ]`, 'memproc', veth!.exec('a'));
      // Killed as soon as the destination listens for its restore (PREPARED is on its way).
      let killedAt = '';
      const killer = (async () => {
        const deadline = Date.now() + 60_000;
        while (Date.now() < deadline) {
          const ready = existsSync(destRoot) && readdirSync(destRoot).some((m) => existsSync(join(destRoot, m, 'img', 'lazy-pages.socket')));
          if (ready) {
            b.agent.child.kill('SIGKILL');
            killedAt = new Date().toISOString();
            return;
          }
          await new Promise((r) => setTimeout(r, 2));
        }
      })();
      const { status, result } = await migrateTo(a.stateDir, original, veth!.b.addr);
      await killer;
      if (process.env.POSTCOPY_TEST_VERBOSE) console.log(killedAt, JSON.stringify(result));
      assert.ok(killedAt, 'the destination agent was killed');
      assert.notEqual(status, 0);
      assert.equal(result.ok, false, JSON.stringify(result));
      assert.equal(result.running, 'original', JSON.stringify(result));
      assert.equal(taskState(original) === 'T' || taskState(original) === 't', false, 'the task is not left stopped');
      assert.notEqual(taskState(original), 'gone');
      await checksRight(dir, 2, 'the original');
      onlyOriginal(dir, original);
    } finally {
      if (original > 0) spawnSync('kill', ['-9', String(original)]);
      rmSync(join(ROOT, dir), { recursive: true, force: true });
      rmSync(destRoot, { recursive: true, force: true });
    }
  });

  onTwoHosts('the destination agent SIGKILLed once its runc restore waits at the gate: the container runs on at the source, never frozen, and nothing of it stays on the destination', async ({ a, b }) => {
    const c = await memprocContainer('pc-dstkill', 128);
    const id = c.id;
    const destRoot = join(ROOT, 'var/lib/postcopy-agent/host-b');
    try {
      const original = c.init;
      // Killed as soon as its `runc restore` (started before the images) holds its RESTORE.
      const killer = (async () => {
        const deadline = Date.now() + 60_000;
        while (Date.now() < deadline) {
          if (existsSync(destRoot) && readdirSync(destRoot).some((m) => existsSync(join(destRoot, m, GATE_HELD)))) {
            b.agent.child.kill('SIGKILL');
            return true;
          }
          await new Promise((r) => setTimeout(r, 2));
        }
        return false;
      })();
      const { status, result } = await migrateTo(a.stateDir, 0, veth!.b.addr, ['--container', id]);
      assert.ok(await killer, 'the destination agent was killed while its restore waited');
      assert.notEqual(status, 0);
      assert.equal(result.running, 'original', JSON.stringify(result));
      assert.equal(containerStatus('host-a', RUNC_A, id)?.status, 'running', 'runc says the container runs at the source (not paused)');
      assert.equal(['t', 'T'].includes(taskState(original)), false, 'its init is not left stopped');
      await checksRight(c.out, 2, 'the container');
      // The held `runc restore` lost its agent: it gave up and removed what it had made.
      const deadline = Date.now() + 10_000;
      while (containerStatus('host-b', RUNC_B, id) !== null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.equal(containerStatus('host-b', RUNC_B, id), null, 'no container on the destination');
    } finally {
      c.remove();
      rmSync(destRoot, { recursive: true, force: true });
    }
  });

  onTwoHosts('the source agent SIGKILLed once the task is frozen: the task runs again at the source, whole, and nothing of it stays on the destination', async ({ a, b }) => {
    const dir = `/var/lib/postcopy/agent-srckill-${process.pid}`;
    let original = 0;
    try {
      original = await startInRoot(dir, `/usr/local/bin/memproc 256 ${dir}/out.txt`, `[ -s ${dir}/out.txt ]`, 'memproc', veth!.exec('a'));
      const killer = killOnceStopped(original, a.agent);
      const { status, result } = await migrateTo(a.stateDir, original, veth!.b.addr);
      const killed = await killer;
      assert.ok(killed, 'the source agent was killed while the task was frozen');
      assert.notEqual(status, 0, JSON.stringify(result));
      // The task runs again (its dump killed once the agent was gone) and its memory is whole.
      const deadline = Date.now() + 20_000;
      while (['t', 'T'].includes(taskState(original)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.equal(taskState(original) === 't' || taskState(original) === 'T', false, `the task is not left frozen (state ${taskState(original)})`);
      await checksRight(dir, 2, 'the original');
      onlyOriginal(dir, original);
    } finally {
      if (original > 0) spawnSync('kill', ['-9', String(original)]);
      rmSync(join(ROOT, dir), { recursive: true, force: true });
    }
  });

  onTwoHosts('the source agent SIGKILLed once a container is frozen (its cgroup frozen on go, its checkpoint started before): it runs again at the source, thawed and whole', async ({ a }) => {
    const c = await memprocContainer('pc-srckill', 256);
    const id = c.id;
    try {
      const original = c.init;
      // CRIU holds the container's init (ptrace-stopped) once its cgroup is frozen and seized.
      const killer = killOnceStopped(original, a.agent);
      const { status, result } = await migrateTo(a.stateDir, 0, veth!.b.addr, ['--container', id]);
      const killed = await killer;
      assert.ok(killed, 'the source agent was killed while the container was frozen');
      assert.notEqual(status, 0, JSON.stringify(result));
      const deadline = Date.now() + 20_000;
      // The dump's watcher thaws the cgroup, then kills CRIU (which lets the init go): both, in time.
      while ((containerStatus('host-a', RUNC_A, id)?.status !== 'running' || ['t', 'T'].includes(taskState(original))) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.equal(containerStatus('host-a', RUNC_A, id)?.status, 'running', 'runc says the container runs (not paused: its cgroup was thawed)');
      assert.equal(['t', 'T'].includes(taskState(original)), false, `its init is not left stopped (state ${taskState(original)})`);
      await checksRight(c.out, 2, 'the container');
    } finally {
      c.remove();
    }
  });

  onTwoHosts('the link between the hosts cut for 2 s during post-copy: the migration resumes and ends with every page right', async ({ a, b }) => {
    const dir = `/var/lib/postcopy/agent-cut-${process.pid}`;
    const destRoot = join(ROOT, 'var/lib/postcopy-agent/host-b');
    rmSync(destRoot, { recursive: true, force: true });
    let original = 0;
    let restored = 0;
    const link = (state: 'up' | 'down') => spawnSync('ip', ['-n', veth!.b.ns, 'link', 'set', veth!.b.dev, state]);
    try {
      original = await startInRoot(dir, `/usr/local/bin/memproc 512 ${dir}/out.txt`, `[ -s ${dir}/out.txt ]`, 'memproc', veth!.exec('a'));
      let cut = false;
      const cutter = (async () => {
        const deadline = Date.now() + 120_000;
        while (Date.now() < deadline) {
          if (existsSync(destRoot) && readdirSync(destRoot).some((m) => existsSync(join(destRoot, m, 'restored.pid')))) {
            link('down');
            cut = true;
            await new Promise((r) => setTimeout(r, 2000));
            link('up');
            return;
          }
          await new Promise((r) => setTimeout(r, 2));
        }
      })();
      const { status, result, stderr } = await migrateTo(a.stateDir, original, veth!.b.addr, ['--timeout', '60']);
      await cutter;
      if (process.env.POSTCOPY_TEST_VERBOSE) console.log(JSON.stringify(result));
      assert.ok(cut, 'the link was cut while pages were still coming');
      assert.equal(status, 0, `${JSON.stringify(result)} ${stderr}`);
      assert.equal(result.running, 'restored');
      restored = result.restoredPid as number;
      assert.ok((result.all_present_ms as number) >= 2000, `every page came after the cut ended: ${JSON.stringify(result)}`);
      await checksRight(dir, 3, 'the restored process', 30_000);
    } finally {
      link('up');
      for (const pid of [original, restored]) if (pid > 0) spawnSync('kill', ['-9', String(pid)]);
      rmSync(join(ROOT, dir), { recursive: true, force: true });
      rmSync(destRoot, { recursive: true, force: true });
    }
  });

  onTwoHosts('moves a process between agents on tls:// with mutual certificates (the rack\'s CA)', async ({ a }) => {
    const dir = `/var/lib/postcopy/agent-tls-${process.pid}`;
    let original = 0;
    let restored = 0;
    try {
      original = await startInRoot(dir, `/usr/local/bin/memproc 32 ${dir}/out.txt`, `[ -s ${dir}/out.txt ]`, 'memproc', veth!.exec('a'));
      const { status, result, stderr } = await migrateTo(a.stateDir, original, veth!.b.addr);
      assert.equal(status, 0, `${JSON.stringify(result)} ${stderr}`);
      restored = result.restoredPid as number;
      assert.equal(result.running, 'restored');
      await checksRight(dir, 2, 'the restored process');
    } finally {
      for (const pid of [original, restored]) if (pid > 0) spawnSync('kill', ['-9', String(pid)]);
      rmSync(join(ROOT, dir), { recursive: true, force: true });
    }
  }, { agents: () => ({ a: ['--listen', `tls://${veth!.a.addr}:${AGENT_PORT}`, ...tls('source')], b: ['--listen', `tls://${veth!.b.addr}:${AGENT_PORT}`, ...tls('target')] }) });

  onTwoHosts('a destination that refuses this host\'s certificate: a clear ERR_AUTH, and nothing was frozen', async ({ a }) => {
    const dir = `/var/lib/postcopy/agent-cert-${process.pid}`;
    let original = 0;
    try {
      assert.ok(existsSync(join(certs.dir, 'stranger.pem')), 'the helper writes the stranger\'s certificate');
      original = await startInRoot(dir, `/usr/local/bin/memproc 16 ${dir}/out.txt`, `[ -s ${dir}/out.txt ]`, 'memproc', veth!.exec('a'));
      const { status, result } = await migrateTo(a.stateDir, original, veth!.b.addr);
      assert.notEqual(status, 0);
      assert.equal(result.ok, false);
      assert.equal(result.code, 'ERR_AUTH', JSON.stringify(result));
      assert.equal(result.running, 'original');
      assert.equal(taskState(original), 'S', 'the task runs on (sleeping between its steps), not stopped');
      const status_ = readFileSync(`/proc/${original}/status`, 'utf8');
      assert.match(status_, /^TracerPid:\s+0$/m);
    } finally {
      if (original > 0) spawnSync('kill', ['-9', String(original)]);
      rmSync(join(ROOT, dir), { recursive: true, force: true });
    }
  }, { agents: () => ({ a: ['--listen', `tls://${veth!.a.addr}:${AGENT_PORT}`, ...tls('stranger')], b: ['--listen', `tls://${veth!.b.addr}:${AGENT_PORT}`, ...tls('target')] }) });
});
