// `postcopy bench` end to end through the built CLI: real faults, the C reference, veth.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { benchCases } from '../src/bench/bench.js';
import { poolTrials, summarize } from '../src/bench/stats.js';
import { caps, need } from './helpers/caps.js';

const BUILT_CLI = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const benchNamespaces = () => spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => /^pcb\d+-[ab]\b/.test(l));

describe('postcopy bench', () => {
  it('pools trials after the warm-up and summarizes in µs', () => {
    const lines = ['{"trial":0,"ns":[900000]}', '{"trial":1,"ns":[1000,3000]}', 'noise', '{"trial":2,"ns":[2000]}', '{"handler":{}}'];
    assert.deepEqual(poolTrials(lines, 1), [1000, 3000, 2000]);
    const s = summarize(poolTrials(lines, 1));
    assert.deepEqual([s.n, s.mean, s.sd, s.p50, s.min, s.max], [3, 2, 1, 2, 1, 3]);
    assert.equal(summarize([]).n, 0);
  });

  it('--load: one source serves several targets at once through namespaces, each with its own key, nothing lost', (t) => {
    if (!need(t, caps.uffd.ok && caps.netns.ok, `${caps.uffd.detail}; ${caps.netns.detail}`)) return;
    const loadNamespaces = () => spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => /^pcl\d+-[ab]\b/.test(l));
    const before = loadNamespaces();
    const r = spawnSync(process.execPath, [BUILT_CLI, 'bench', '--load', '4', '--load-mib', '8', '--json'], { encoding: 'utf8', timeout: 180_000 });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.perTarget.length, 4);
    assert.equal(out.lost, 0);
    for (const target of out.perTarget) {
      assert.equal(target.pages, 2048);
      assert.equal(target.faulted + target.pushed + target.zero <= 2048, true);
      assert.ok(target.faultP99Us > 0 && target.lost === 0, JSON.stringify(target));
    }
    assert.ok(out.pagesPerSecond > 0);
    assert.deepEqual(loadNamespaces(), before, 'its namespaces are gone');
  });

  it('runs unix on loopback only', () => {
    const cases = benchCases({ transports: ['tcp', 'unix'], links: ['loopback', 'veth'], mtus: [1500, 9000], pageSizes: [4096] });
    assert.deepEqual(cases.map((c) => `${c.transport}/${c.link}/${c.mtu}`), ['tcp/loopback/null', 'tcp/veth/1500', 'tcp/veth/9000', 'unix/loopback/null']);
  });

  it('measures ours beside the C reference on loopback and veth, then removes its namespaces', (t) => {
    if (!need(t, caps.uffd.ok && caps.processVmReadv.ok && caps.netns.ok, `${caps.uffd.detail}; ${caps.netns.detail}`)) return;
    assert.ok(existsSync(BUILT_CLI), 'npm test builds the CLI first');
    const dir = mkdtempSync(join(tmpdir(), 'pc-bench-test-'));
    try {
      const plot = join(dir, 'fig.svg');
      const args = ['bench', '--trials', '2', '--warmup', '1', '--faults', '100', '--mtu', '4200', '--json', '--plot', plot];
      const r = spawnSync(process.execPath, [BUILT_CLI, ...args], { encoding: 'utf8', timeout: 180_000 });
      assert.equal(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.equal(out.placement, 'same');
      assert.deepEqual(out.cpusUsed, { server: '0', target: '0' });
      assert.equal(out.cases.length, 6); // tcp x {loopback, veth 4200} x 2 page sizes, unix x 2 page sizes
      for (const c of out.cases) {
        for (const side of [c.ours, c.ref, c.network]) assert.equal(side.n, 200, JSON.stringify(c));
        assert.ok(c.ours.p50 > 0 && c.ref.p50 > 0 && Number.isFinite(c.ratio.p50), JSON.stringify(c));
        assert.ok(c.ours.p99 >= c.ours.p50);
        assert.ok(Object.values(c.breakdown).every(Number.isFinite));
      }
      assert.ok(out.kernel['4096'].p50 > 0 && out.kernel['65536'].p50 > 0);
      assert.match(readFileSync(plot, 'utf8'), /^<svg[^>]*>[\s\S]*ours[\s\S]*C reference/);
      assert.deepEqual(benchNamespaces(), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('removes its namespaces when interrupted', async (t) => {
    if (!need(t, caps.uffd.ok && caps.netns.ok, caps.netns.detail)) return;
    const child = spawn(process.execPath, [BUILT_CLI, 'bench', '--link', 'veth', '--mtu', '1500', '--transport', 'tcp', '--trials', '1000', '--json'], { stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const deadline = Date.now() + 30_000;
    while (benchNamespaces().length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.notDeepEqual(benchNamespaces(), [], 'the bench made its namespaces');
    child.kill('SIGTERM');
    assert.equal(await exited, 143);
    assert.deepEqual(benchNamespaces(), []);
  });

  it('says which CLI values it accepts', () => {
    const r = spawnSync(process.execPath, [BUILT_CLI, 'bench', '--mtu', '1400'], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /"1400" is not one of 1500, 4200, 9000/);
  });
});
