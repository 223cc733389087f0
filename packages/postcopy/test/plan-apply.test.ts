// `postcopy plan --apply` on a live rack: three hosts (network namespaces on one bridge, an agent
// each) and the address of a fourth whose agent is down. Light containers on some of them: the
// planner empties hosts, the moves really happen (or fail, and leave their container where it
// was), their workloads check out, and the source agents' ledgers hold forecast and measured cost.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ensureCriuRoot } from '../src/criu/root.js';
import { LineChild } from '../src/util/child.js';
import { NetnsLan } from '../src/util/netns.js';
import { caps, need } from './helpers/caps.js';
import { containerStatus, makeBundle, removeContainer, startContainer } from './helpers/container.js';
import { CLI, waitForLines } from './helpers/util.js';

const ROOT = process.env.POSTCOPY_CRIU_ROOT ?? '/var/cache/postcopy/trixie';
const TSX = [process.execPath, '--import', 'tsx', CLI];


const NAMES = ['host-a', 'host-b', 'host-c'];
const runcRoot = (i: number) => `/var/lib/postcopy-agent/${NAMES[i]}/runc`;

interface PlanResult {
  hosts: { id: string; containers: unknown[] }[];
  unreachable: { agent: string; code: string }[];
  moves: { container: string; from: string; to: string; reason: string; gainJ: number; costJ: number }[];
  applied: { container: string; ok: boolean; measuredCostJ?: number; code?: string; running?: string }[];
}

interface Rack {
  tmp: string;
  lan: NetnsLan;
  ids: string[];
  out: (k: number) => string;
  /** `plan --apply --json` from host-a, over the three agents and a fourth address with none */
  plan(): { status: number | null; result: PlanResult };
}

/**
 * Three agents of class "small" (4 threads, 8 GiB, the m510's curve to 4 threads), and one container
 * per entry of `workloads` on host `host` (OUT stands for its output directory), each started and
 * its output seen; everything is removed afterwards, whatever happens.
 */
async function withRack(tag: string, workloads: { host: number; cmd: string }[], fn: (rack: Rack) => Promise<void>): Promise<void> {
  ensureCriuRoot();
  const tmp = mkdtempSync(join(tmpdir(), 'pc-plan-'));
  const keyFile = join(tmp, 'rack.key');
  writeFileSync(keyFile, randomBytes(32).toString('hex'));
  const classes = join(tmp, 'classes.json');
  writeFileSync(classes, JSON.stringify([{ name: 'small', threads: 4, memGiB: 8, power: [[0, 27], [1, 51], [4, 65.5]], chassisW: 40, wPerGiB: 0, sleepW: 6, wakeS: 60, wakeJ: 4000 }]));
  const lan = NetnsLan.create(`${tag}${process.pid % 10000}`, tag === 'pcf' ? '10.239.0' : '10.238.0', 4);
  const agents: LineChild[] = [];
  const ids = workloads.map((_, k) => `${tag}-${k}-${process.pid}`);
  const out = (k: number) => `/var/lib/postcopy/${ids[k]}-out`;
  try {
    for (let i = 0; i < 3; i++) {
      const agent = new LineChild(NAMES[i], [...lan.exec(i), ...TSX, 'agent', '--listen', `tcp://${lan.hosts[i].addr}:7070`, '--key-file', keyFile, '--state-dir', join(tmp, `state-${i}`), '--name', NAMES[i], '--class', 'small', '--json']);
      agents.push(agent);
      await agent.event('agent', 'listening', 60_000);
    }
    for (const [k, w] of workloads.entries()) {
      mkdirSync(join(ROOT, out(k)), { recursive: true });
      makeBundle(`/var/lib/postcopy/bundles/${ids[k]}`, ['/bin/sh', '-c', `exec ${w.cmd.replaceAll('OUT', out(k))} </dev/null >/dev/null 2>&1`], [out(k)]);
      startContainer(NAMES[w.host], runcRoot(w.host), `/var/lib/postcopy/bundles/${ids[k]}`, ids[k], lan.exec(w.host));
      await waitForLines(join(ROOT, out(k), 'out.txt'), (l) => l.length >= 1 && l[0] !== '', 30_000);
    }
    const addrs = lan.hosts.map((h) => h.addr).join(',');
    const plan = () => {
      const r = spawnSync(lan.exec(0)[0], [...lan.exec(0).slice(1), ...TSX, 'plan', '--agents', addrs, '--key-file', keyFile, '--classes', classes, '--apply', '--json'], { encoding: 'utf8', timeout: 300_000 });
      if (process.env.POSTCOPY_TEST_VERBOSE) console.log(r.stdout, r.stderr);
      return { status: r.status, result: JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as PlanResult };
    };
    await fn({ tmp, lan, ids, out, plan });
  } finally {
    for (const k of ids.keys()) {
      for (let h = 0; h < 3; h++) removeContainer(NAMES[h], runcRoot(h), ids[k]);
      rmSync(join(ROOT, out(k)), { recursive: true, force: true });
      rmSync(join(ROOT, `/var/lib/postcopy/bundles/${ids[k]}`), { recursive: true, force: true });
    }
    for (const a of agents) a.kill();
    lan.destroy();
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** A memproc container's output: it runs on, and checks out. */
async function checksOut(rack: Rack, k: number): Promise<void> {
  const before = (await waitForLines(join(ROOT, rack.out(k), 'out.txt'), () => true, 0)).length;
  const lines = await waitForLines(join(ROOT, rack.out(k), 'out.txt'), (l) => l.length >= before + 2, 20_000);
  assert.deepEqual(lines.filter((l) => !l.startsWith('ok ')), [], `container ${rack.ids[k]} checks out`);
}

const ledgerOf = (rack: Rack, host: number) => readFileSync(join(rack.tmp, `state-${host}`, 'ledger.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);

describe('postcopy plan --apply', () => {
  it('empties one of two lightly loaded hosts into the other through the agents, leaves a host whose agent is down alone, and records forecast and measured cost', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok && caps.netns.ok, `${caps.uffd.detail}; ${caps.netns.detail}`)) return;
    await withRack('pcp', [{ host: 0, cmd: '/usr/local/bin/memproc 16 OUT/out.txt' }, { host: 1, cmd: '/usr/local/bin/memproc 16 OUT/out.txt' }], async (rack) => {
      const { status, result } = rack.plan();
      assert.deepEqual(result.hosts.map((h) => h.id).sort(), NAMES);
      assert.deepEqual(result.unreachable.map((u) => [u.agent, u.code]), [[rack.lan.hosts[3].addr, 'ERR_PEER_CLOSED']]);
      assert.equal(result.moves.length, 1, JSON.stringify(result.moves));
      const [move] = result.moves;
      assert.equal(move.reason, 'empty-host');
      assert.ok(rack.ids.includes(move.container) && move.to !== 'host-c', JSON.stringify(move));
      assert.ok(move.gainJ > move.costJ);
      assert.equal(result.applied[0].ok, true, JSON.stringify(result.applied));
      // The move happened: runc runs the container on its new host, not on its old one, and it checks out.
      const from = NAMES.indexOf(move.from);
      const to = NAMES.indexOf(move.to);
      assert.equal(containerStatus(move.to, runcRoot(to), move.container)?.status, 'running');
      assert.equal(containerStatus(move.from, runcRoot(from), move.container), null);
      await checksOut(rack, rack.ids.indexOf(move.container));
      // The ledger of the source agent: the forecast, and the measured cost beside it.
      const ledger = ledgerOf(rack, from);
      assert.equal(ledger.length, 1);
      assert.equal(ledger[0].state, 'done');
      assert.equal(ledger[0].container, move.container);
      assert.ok(Math.abs(ledger[0].forecast.costJ - move.costJ) < 1e-6 && ledger[0].forecast.gainJ > 0);
      assert.ok(ledger[0].measured.costJ > 0, JSON.stringify(ledger[0].measured));
      assert.equal(Math.round(ledger[0].measured.costJ), result.applied[0].measuredCostJ);
      assert.equal(status, 1, 'the exit status says a host was left alone');
    });
  });

  it('leaves a container whose move fails running where it was, and goes on with the next move', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok && caps.netns.ok, `${caps.uffd.detail}; ${caps.netns.detail}`)) return;
    // The idlest host holds redis listening on TCP: CRIU 4.1.1 cannot dump an INET socket on this
    // kernel (postcopy doctor says so), so its move fails at the dump. The planner empties that host
    // first, then one of the other two into the third.
    await withRack('pcf', [
      { host: 0, cmd: "redis-server --port 6399 --save '' --appendonly no --dir OUT --logfile OUT/out.txt" },
      { host: 1, cmd: '/usr/local/bin/memproc 16 OUT/out.txt' },
      { host: 2, cmd: '/usr/local/bin/memproc 16 OUT/out.txt' },
    ], async (rack) => {
      const { status, result } = rack.plan();
      assert.equal(result.moves.length, 2, JSON.stringify(result.moves));
      assert.equal(result.moves[0].container, rack.ids[0], 'the idlest host is emptied first');
      const [failed, done] = result.applied;
      assert.equal(failed.ok, false, JSON.stringify(result.applied));
      assert.equal(failed.running, 'original', JSON.stringify(failed));
      assert.equal(containerStatus('host-a', runcRoot(0), rack.ids[0])?.status, 'running', 'redis runs on where it was');
      for (let h = 1; h < 3; h++) assert.equal(containerStatus(NAMES[h], runcRoot(h), rack.ids[0]), null, 'and nowhere else');
      assert.equal(done?.ok, true, JSON.stringify(result.applied));
      const k = rack.ids.indexOf(result.moves[1].container);
      const to = NAMES.indexOf(result.moves[1].to);
      assert.equal(containerStatus(result.moves[1].to, runcRoot(to), result.moves[1].container)?.status, 'running');
      await checksOut(rack, k);
      assert.equal(ledgerOf(rack, 0)[0].state === 'done', false, 'the failed move is in its agent\'s ledger, not as done');
      assert.equal(status, 1, 'the exit status says a move failed');
    });
  });
});
