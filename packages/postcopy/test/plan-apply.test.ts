// `postcopy plan --apply` on a live rack: three hosts (network namespaces on one bridge, an agent
// each) and the address of a fourth whose agent is down. A light container on each of two hosts:
// the planner empties one into the other, the move really happens, its workload checks out, and
// the source agent's ledger holds the forecast beside the measured cost.
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

describe('postcopy plan --apply', () => {
  it('empties one of two lightly loaded hosts into the other through the agents, leaves a host whose agent is down alone, and records forecast and measured cost', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok && caps.netns.ok, `${caps.uffd.detail}; ${caps.netns.detail}`)) return;
    ensureCriuRoot();
    const tmp = mkdtempSync(join(tmpdir(), 'pc-plan-'));
    const keyFile = join(tmp, 'rack.key');
    writeFileSync(keyFile, randomBytes(32).toString('hex'));
    // A small class: 4 threads, 8 GiB, the m510's curve to 4 threads.
    const classes = join(tmp, 'classes.json');
    writeFileSync(classes, JSON.stringify([{ name: 'small', threads: 4, memGiB: 8, power: [[0, 27], [1, 51], [4, 65.5]], chassisW: 40, wPerGiB: 0, sleepW: 6, wakeS: 60, wakeJ: 4000 }]));
    const lan = NetnsLan.create(`pcp${process.pid % 10000}`, '10.238.0', 4);
    const agents: LineChild[] = [];
    const names = ['host-a', 'host-b', 'host-c'];
    const runcRoot = (i: number) => `/var/lib/postcopy-agent/${names[i]}/runc`;
    const ids = [`pc-plan-a-${process.pid}`, `pc-plan-b-${process.pid}`];
    const out = (i: number) => `/var/lib/postcopy/${ids[i]}-out`;
    try {
      for (let i = 0; i < 3; i++) {
        const agent = new LineChild(names[i], [...lan.exec(i), ...TSX, 'agent', '--listen', `tcp://${lan.hosts[i].addr}:7070`, '--key-file', keyFile, '--state-dir', join(tmp, `state-${i}`), '--name', names[i], '--class', 'small', '--json']);
        agents.push(agent);
        await agent.event('agent', 'listening', 60_000);
      }
      for (let i = 0; i < 2; i++) {
        mkdirSync(join(ROOT, out(i)), { recursive: true });
        makeBundle(`/var/lib/postcopy/bundles/${ids[i]}`, ['/bin/sh', '-c', `exec /usr/local/bin/memproc 16 ${out(i)}/out.txt </dev/null >/dev/null 2>&1`], [out(i)]);
        startContainer(names[i], runcRoot(i), `/var/lib/postcopy/bundles/${ids[i]}`, ids[i], lan.exec(i));
        await waitForLines(join(ROOT, out(i), 'out.txt'), (l) => l.length >= 1 && l[0] !== '', 30_000);
      }
      // Host 4's address has no agent: left alone, and reported.
      const addrs = lan.hosts.map((h) => h.addr).join(',');
      const r = spawnSync(lan.exec(0)[0], [...lan.exec(0).slice(1), ...TSX, 'plan', '--agents', addrs, '--key-file', keyFile, '--classes', classes, '--apply', '--json'], { encoding: 'utf8', timeout: 300_000 });
      const result = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as {
        hosts: { id: string; containers: unknown[] }[];
        unreachable: { agent: string; code: string }[];
        moves: { container: string; from: string; to: string; reason: string; gainJ: number; costJ: number }[];
        applied: { ok: boolean; measuredCostJ?: number }[];
      };
      if (process.env.POSTCOPY_TEST_VERBOSE) console.log(r.stdout, r.stderr);
      assert.deepEqual(result.hosts.map((h) => h.id).sort(), names);
      assert.deepEqual(result.unreachable.map((u) => [u.agent, u.code]), [[lan.hosts[3].addr, 'ERR_PEER_CLOSED']]);
      assert.equal(result.moves.length, 1, JSON.stringify(result.moves));
      const [move] = result.moves;
      assert.equal(move.reason, 'empty-host');
      assert.ok(ids.includes(move.container) && move.to !== 'host-c', JSON.stringify(move));
      assert.ok(move.gainJ > move.costJ);
      assert.equal(result.applied[0].ok, true, JSON.stringify(result.applied));
      // The move happened: runc runs the container on its new host, not on its old one, and it checks out.
      const from = names.indexOf(move.from);
      const to = names.indexOf(move.to);
      const k = ids.indexOf(move.container);
      assert.equal(containerStatus(move.to, runcRoot(to), move.container)?.status, 'running');
      assert.equal(containerStatus(move.from, runcRoot(from), move.container), null);
      const before = (await waitForLines(join(ROOT, out(k), 'out.txt'), () => true, 0)).length;
      const lines = await waitForLines(join(ROOT, out(k), 'out.txt'), (l) => l.length >= before + 2, 20_000);
      assert.deepEqual(lines.filter((l) => !l.startsWith('ok ')), [], 'the moved container checks out');
      // The ledger of the source agent: the forecast, and the measured cost beside it.
      const ledger = readFileSync(join(tmp, `state-${from}`, 'ledger.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.equal(ledger.length, 1);
      assert.equal(ledger[0].state, 'done');
      assert.equal(ledger[0].container, move.container);
      assert.ok(Math.abs(ledger[0].forecast.costJ - move.costJ) < 1e-6 && ledger[0].forecast.gainJ > 0);
      assert.ok(ledger[0].measured.costJ > 0, JSON.stringify(ledger[0].measured));
      assert.equal(Math.round(ledger[0].measured.costJ), result.applied[0].measuredCostJ);
      assert.equal(r.status, 1, 'the exit status says a host was left alone');
    } finally {
      for (let i = 0; i < 2; i++) {
        for (let h = 0; h < 3; h++) removeContainer(names[h], runcRoot(h), ids[i]);
        rmSync(join(ROOT, out(i)), { recursive: true, force: true });
        rmSync(join(ROOT, `/var/lib/postcopy/bundles/${ids[i]}`), { recursive: true, force: true });
      }
      for (const a of agents) a.kill();
      lan.destroy();
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
