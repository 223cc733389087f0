// CRIU: images parsed from a real dump, and a real lazy migration where stock `criu dump
// --lazy-pages` is the source and postcopy takes the place of `criu lazy-pages`.
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { decodeFields, imageRecords, ImageMagic, lazyLayout, lazyRanges, parseMm, parsePagemap, readDump } from '../src/criu/image.js';
import { serveLazyPages } from '../src/criu/lazy-pages.js';
import { readIov, writeIov, PS_IOV_GET } from '../src/protocol/criu-page-server.js';
import { LineChild } from '../src/util/child.js';
import { runCriuBench, startInRoot } from '../src/bench/criu-bench.js';
import { migrate } from '../src/criu/migrate.js';
import { ensureCriuRoot, withPipeSize } from '../src/criu/root.js';
import { privateAnonymousRanges } from '../src/source/live-process.js';
import { caps, need } from './helpers/caps.js';
import { assertMemprocRuns, dumpInRoot } from './helpers/criu-dump.js';
import { CLI, jsonLines, spawnTs, taskState, waitForLines } from './helpers/util.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/criu-memproc', import.meta.url));
const SCRIPT = fileURLToPath(new URL('../scripts/criu-root.sh', import.meta.url));
const ROOT = process.env.POSTCOPY_CRIU_ROOT ?? '/var/cache/postcopy/trixie';
const isImageError = (e: { code?: string }) => e.code === 'ERR_IMAGE';

/** A work directory inside the CRIU root for one test, and what to kill and remove afterwards. */
function testDir(tag: string) {
  const dir = `/var/lib/postcopy/${tag}-${process.pid}`;
  return {
    dir,
    host: join(ROOT, dir),
    /** the restored task, once known */
    restored: 0,
    cleanup(workload?: string) {
      if (this.restored) spawnSync('kill', ['-9', String(this.restored)]);
      if (workload) spawnSync('pkill', ['-9', '-x', workload]);
      rmSync(this.host, { recursive: true, force: true });
    },
  };
}

describe('CRIU images', () => {
  it('reads a real lazy dump: one task, its lazy VMAs and pages', () => {
    const dump = readDump(FIXTURE);
    assert.deepEqual(dump.tasks, [{ pid: 1, ppid: 0 }]);
    const pm = dump.pagemaps.get(1)!;
    const lazy = lazyRanges(pm);
    const heap = lazy.find((r) => r.length >= 64 << 20);
    assert.ok(heap, 'the 64 MiB heap of memproc is lazy');
    const layout = lazyLayout(dump.mms.get(1)!, pm);
    const lazyPages = layout.lazy.reduce((n, l) => n + l.reduce((a, b) => a + b, 0), 0);
    assert.equal(lazyPages, pm.entries.filter((e) => e.flags & 2).reduce((n, e) => n + e.nrPages, 0));
    for (const r of layout.regions) assert.ok(r.length % 4096 === 0 && r.start % 4096 === 0);
  });

  it('skips a zombie of the dump (no pagemap, no mm image), and refuses a task that lacks only one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-zombie-'));
    try {
      spawnSync('cp', ['-a', `${FIXTURE}/.`, dir]);
      // pstree: task 1 (alive, the fixture's) and task 2, its zombie child, with no memory images.
      const header = readFileSync(join(FIXTURE, 'pstree.img')).subarray(0, 8);
      const entry = (pid: number, ppid: number) => {
        const body = Buffer.from([0x08, pid, 0x10, ppid]);
        const len = Buffer.alloc(4);
        len.writeUInt32LE(body.length);
        return Buffer.concat([len, body]);
      };
      writeFileSync(join(dir, 'pstree.img'), Buffer.concat([header, entry(1, 0), entry(2, 1)]));
      const dump = readDump(dir);
      assert.deepEqual(dump.tasks.map((t) => t.pid), [1]);
      assert.deepEqual(dump.zombies, [2]);
      rmSync(join(dir, 'mm-1.img'));
      assert.throws(() => readDump(dir), isImageError, 'a live task without its mm image');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses bad images with ERR_IMAGE', () => {
    const good = readFileSync(join(FIXTURE, 'pagemap-1.img'));
    assert.throws(() => parsePagemap(good.subarray(0, 6)), isImageError);
    assert.throws(() => parseMm(good), isImageError); // a pagemap is not an mm image
    const cut = Buffer.from(good.subarray(0, good.length - 3));
    assert.throws(() => parsePagemap(cut), isImageError);
    assert.throws(() => readDump('/nonexistent'), isImageError);
  });

  it('decodes varints of every length, in numbers up to 2^53 and as bigint beyond', () => {
    const encode = (v: bigint) => {
      const out: number[] = [];
      do {
        out.push(Number(v & 0x7fn) | (v > 0x7fn ? 0x80 : 0));
        v >>= 7n;
      } while (v > 0n);
      return out;
    };
    const values = [0n, 1n, 127n, 128n, 300n, (1n << 49n) - 1n, 1n << 49n, 0x7f188e4836a0n, (1n << 53n) - 1n, 1n << 53n, (1n << 64n) - 1n];
    for (const v of values) {
      const fields = decodeFields(Uint8Array.from([1 << 3, ...encode(v)]), 'test');
      const got = fields.get(1)![0];
      assert.equal(typeof got === 'bigint' ? got : BigInt(got as number), v, `varint ${v}`);
      assert.equal(typeof got, v <= BigInt(Number.MAX_SAFE_INTEGER) ? 'number' : 'bigint');
    }
    assert.throws(() => decodeFields(Uint8Array.from([1 << 3, 0x80, 0x80]), 'test'), isImageError); // truncated
    assert.throws(() => decodeFields(Uint8Array.from([1 << 3, ...new Array(10).fill(0x80), 1]), 'test'), isImageError); // 11 bytes
  });

  it('encodes the page-server header as CRIU does', () => {
    const b = Buffer.alloc(24);
    writeIov(b, 0, { cmd: PS_IOV_GET, nrPages: 3, vaddr: 0x7f25c7df3000, dstId: 1 });
    assert.equal(b.toString('hex'), '07000000030000000030dfc7257f00000100000000000000');
    assert.deepEqual(readIov(b, 0), { cmd: 7, nrPages: 3, vaddr: 0x7f25c7df3000, dstId: 1 });
  });
});

describe('CRIU lazy migration', () => {
  it('migrates memproc (64 MiB) from stock criu dump --lazy-pages, postcopy serving its faults', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok, caps.uffd.detail)) return;
    ensureCriuRoot();
    const port = 27100 + (process.pid % 800);
    const d = await dumpInRoot({ tag: `pc${process.pid}`, workload: 'memproc 64 OUT', lazyPort: port });
    let restore: LineChild | null = null;
    try {
      const result = await serveLazyPages({
        imagesDir: join(d.onHost, 'img'),
        source: { kind: 'criu', endpoint: { kind: 'tcp', host: '127.0.0.1', port } },
        timeoutMs: 60_000,
        onListening: () => {
          restore = new LineChild('criu restore', ['bash', SCRIPT, 'exec', 'criu', 'restore', '-D', `${d.inRoot}/img`, '--lazy-pages', '-d', '--pidfile', `${d.inRoot}/restored.pid`, '-o', 'restore.log']);
        },
      });
      await restore!.rest(60_000);
      if (process.env.POSTCOPY_TEST_VERBOSE) console.log(JSON.stringify(result));
      assert.equal(result.tasks.length, 1);
      const r = result.tasks[0].report;
      assert.equal(r.complete, true, JSON.stringify(r));
      assert.ok(r.faulted > 0 && r.pushed > 0, JSON.stringify(r));
      assert.ok(r.faulted + r.pushed >= 16384, 'every lazy page of the 64 MiB heap came over');
      const tail = await d.dumpSide.rest(30_000);
      assert.ok(tail.includes('dump exit 0'), `criu dump ended: ${tail.join(' | ')}; ${d.dumpSide.stderr}`);
      await assertMemprocRuns(join(d.onHost, 'out.txt'), d.before);
    } finally {
      d.cleanup([restore]);
    }
  });

  it('runs the two-host recipe with the CLI: serve --dump at the source, lazy-pages --images-from at the target', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok, caps.uffd.detail)) return;
    ensureCriuRoot();
    const port = 27900 + (process.pid % 50);
    const d = await dumpInRoot({ tag: `pc2h${process.pid}`, workload: 'memproc 64 OUT', lazyPort: port });
    const keyFile = join(d.onHost, 'key');
    writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
    const children: ChildProcess[] = [];
    let restore: LineChild | null = null;
    try {
      // The source host: serve the frozen task's lazy memory and the images; end the dump when done.
      const serve = spawnTs(CLI, ['serve', '--pid', String(d.pid), '--dump', join(d.onHost, 'img'), '--criu-page-server', String(port), '--listen', 'tcp://127.0.0.1:0', '--images', join(d.onHost, 'img'), '--images-listen', 'tcp://127.0.0.1:0', '--key-file', keyFile, '--json']);
      children.push(serve);
      const src = jsonLines(serve);
      const pages = (await src.next((e) => e.event === 'listening')).endpoint as string;
      const images = (await src.next((e) => e.event === 'images-listening')).endpoint as string;
      // The target host: fetch the images, take criu restore's uffd, fetch and push the pages.
      const targetImg = join(d.onHost, 'target', 'img');
      const lazy = spawnTs(CLI, ['lazy-pages', '--images', targetImg, '--images-from', images, '--source', 'postcopy', '--page-server', pages, '--key-file', keyFile, '--pidfile', join(d.onHost, 'target', 'restored.pid'), '--json']);
      children.push(lazy);
      const dst = jsonLines(lazy);
      await dst.next((e) => e.event === 'listening', 60_000);
      restore = new LineChild('criu restore', ['bash', SCRIPT, 'exec', 'criu', 'restore', '-D', `${d.inRoot}/target/img`, '--lazy-pages', '-d', '--pidfile', `${d.inRoot}/target/restored.pid`, '-o', 'restore.log']);
      await restore.rest(60_000);
      const done = (await dst.next((e) => e.event === 'done', 60_000)) as { tasks: { report: { complete: boolean; pages: number } }[]; restoreExitAt: number | null };
      assert.equal(done.tasks[0].report.complete, true, JSON.stringify(done));
      assert.ok(done.restoreExitAt !== null, 'the exit of criu restore was seen');
      const served = (await src.next((e) => e.event === 'done', 30_000)) as { complete: boolean; stats: { bytesSent: number } };
      assert.equal(served.complete, true);
      assert.ok(served.stats.bytesSent >= 64 << 20, 'the whole heap came from postcopy serve');
      const tail = await d.dumpSide.rest(30_000);
      assert.ok(tail.includes('dump exit 0'), `serve ended CRIU's dump: ${tail.join(' | ')}; ${d.dumpSide.stderr}`);
      await assertMemprocRuns(join(d.onHost, 'out.txt'), d.before);
    } finally {
      for (const c of children) c.kill('SIGKILL');
      d.cleanup([restore]);
    }
  });

  it('refuses serve --dump options that cannot work, before serving anything', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-dump-'));
    try {
      const run = (args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', CLI, 'serve', '--listen', 'tcp://127.0.0.1:0', ...args], { encoding: 'utf8' });
      for (const [args, code, text] of [
        [['--pid', String(process.pid), '--dump', dir, '--range', '4096:4096'], 'ERR_INVALID_ARG', 'no --range'],
        [['--dump', dir, '--image', '/dev/null'], 'ERR_INVALID_ARG', 'give its --pid'],
        [['--pid', String(process.pid), '--criu-page-server', '1'], 'ERR_INVALID_ARG', 'goes with --dump'],
        [['--pid', String(process.pid), '--dump', dir], 'ERR_IMAGE', 'pstree.img'],
      ] as const) {
        const r = run([...args]);
        assert.notEqual(r.status, 0, args.join(' '));
        assert.ok(r.stderr.includes(code), r.stderr);
        assert.ok(r.stderr.includes(text), r.stderr);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('postcopy migrate', () => {
  it('refuses bench settings that cannot work before any task freezes', async () => {
    const base = { workloads: ['memproc' as const], runs: 1, memprocMiB: 8, redisKeys: 10 };
    for (const bad of [{ idleBefore: -1 }, { idleBefore: 601 }, { pushWindow: 0 }])
      await assert.rejects(runCriuBench({ ...base, ...bad }), (e: { code?: string }) => e.code === 'ERR_INVALID_ARG', JSON.stringify(bad));
  });

  it('migrates memproc (256 MiB) and redis (100k keys) with stock CRIU, by postcopy and by CRIU alone, with every page right', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok, caps.uffd.detail)) return;
    const r = await runCriuBench({ workloads: ['memproc', 'redis'], runs: 1, memprocMiB: 256, redisKeys: 100_000 });
    if (process.env.POSTCOPY_TEST_VERBOSE) console.log(JSON.stringify(r.runs));
    assert.equal(r.runs.length, 4);
    for (const run of r.runs) {
      assert.equal(run.verified, true, `${run.workload} ${run.mode}: ${run.detail}`);
      assert.ok(run.downtime_ms > 0 && run.all_present_ms >= run.downtime_ms, JSON.stringify(run));
      if (run.mode === 'postcopy') assert.ok(run.bytes_sent! > 0 && run.pages! > 0, JSON.stringify(run));
    }
    const memproc = r.runs.find((x) => x.workload === 'memproc' && x.mode === 'postcopy')!;
    assert.ok(memproc.bytes_sent! >= 256 << 20, 'the whole heap came from our source');
    for (const run of r.runs) assert.equal(run.warmed_bytes, 0, 'no warm-up unless asked for');
    for (const run of r.runs.filter((x) => x.mode === 'postcopy'))
      assert.equal(run.prepared_before_freeze, 1, `${run.workload}: the map read before the freeze is the one CRIU dumped`);
    assert.ok(r.ratios.every((x) => Number.isFinite(x.all_present) && Number.isFinite(x.downtime)));
  });

  it('prepares a task again after the dump when its map changed before the freeze, or when asked to', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok, caps.uffd.detail)) return;
    ensureCriuRoot();
    // A stale map: the ranges as they are, less the last one (as if the task had mapped it since).
    const stale = (hostPid: number) => privateAnonymousRanges(hostPid).slice(0, -1);
    for (const [tag, options] of [['stale', { layoutBeforeFreeze: stale, warmUp: true }], ['after', { prepare: 'after-dump' as const }]] as const) {
      const w = testDir(`prepare-${tag}`);
      const { dir, host } = w;
      try {
        const pid = await startInRoot(dir, `/usr/local/bin/memproc 64 ${dir}/out.txt`, `[ -s ${dir}/out.txt ]`, 'memproc');
        const before = readFileSync(join(host, 'out.txt'), 'utf8').trim().split('\n').length;
        const result = await withPipeSize(() => migrate({ pid, workDir: dir, criuPort: 27960 + (process.pid % 9), ...options }));
        w.restored = result.restoredPid;
        assert.equal(result.prepared_before_freeze, 0, `${tag}: prepared again after the dump`);
        if (tag === 'stale') assert.ok(result.warmed_bytes! >= 64 << 20 && result.warm_up_ms! > 0, `warm-up asked for: as much as the heap (${result.warmed_bytes} B, ${result.warm_up_ms} ms)`);
        else assert.equal(result.warmed_bytes, 0, 'no warm-up unless asked for');
        assert.ok(result.bytes_sent! >= 64 << 20, JSON.stringify(result));
        const lines = await waitForLines(join(host, 'out.txt'), (l) => l.length >= before + 2, 20_000);
        assert.ok(lines.length >= before + 2, `${tag}: the restored process runs`);
        assert.deepEqual(lines.filter((l) => !l.startsWith('ok ')), [], `${tag}: every checksum right`);
      } finally {
        w.cleanup('memproc');
      }
    }
  });

  it('fails clearly when the source task dies mid-migration, and never lets the restored task run on', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok, caps.uffd.detail)) return;
    ensureCriuRoot();
    const w = testDir('killed');
    const { dir, host } = w;
    try {
      const pid = await startInRoot(dir, `/usr/local/bin/memproc 256 ${dir}/out.txt`, `[ -s ${dir}/out.txt ]`, 'memproc');
      const failure = await withPipeSize(() =>
        migrate({
          pid,
          workDir: dir,
          criuPort: 27990 + (process.pid % 9),
          onPhase: (phase) => {
            if (phase !== 'restored') return;
            w.restored = Number(readFileSync(join(host, 'restored.pid'), 'utf8'));
            process.kill(pid, 'SIGKILL'); // the frozen source, while the push has most of 256 MiB to go
          },
        }).then(() => null, (e: { code?: string; remoteCode?: string; message: string }) => e),
      );
      assert.ok(failure, 'the migration must fail');
      assert.ok(failure.code === 'ERR_REMOTE' ? failure.remoteCode === 'ERR_SOURCE_GONE' : failure.code === 'ERR_PEER_CLOSED', `${failure.code}/${failure.remoteCode}: ${failure.message}`);
      assert.ok(w.restored > 0);
      const deadline = Date.now() + 2000;
      while (!['gone', 'Z', 'X'].includes(taskState(w.restored)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(['gone', 'Z', 'X'].includes(taskState(w.restored)), `the restored task was killed, not left on missing pages (state ${taskState(w.restored)})`);
    } finally {
      w.cleanup();
    }
  });

  it('migrates between two network namespaces, the images travelling on their own connection', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok && caps.netns.ok, `${caps.uffd.detail}; ${caps.netns.detail}`)) return;
    ensureCriuRoot();
    const w = testDir('netns');
    const { dir, host } = w;
    try {
      const pid = await startInRoot(dir, `/usr/local/bin/memproc 128 ${dir}/out.txt`, `[ -s ${dir}/out.txt ]`, 'memproc');
      const before = readFileSync(join(host, 'out.txt'), 'utf8').trim().split('\n').length;
      const phases: string[] = [];
      const result = await withPipeSize(() => migrate({ pid, workDir: dir, criuPort: 27970 + (process.pid % 9), netns: true, onPhase: (p) => phases.push(p) }));
      w.restored = result.restoredPid;
      if (process.env.POSTCOPY_TEST_VERBOSE) console.log(JSON.stringify(result), phases);
      assert.ok(phases.includes('images on the target') && phases.includes('released'), phases.join(', '));
      assert.ok(existsSync(join(host, 'target', 'img', 'pstree.img')), 'the images were copied to the target side');
      assert.ok(result.bytes_sent! >= 128 << 20, JSON.stringify(result));
      const lines = await waitForLines(join(host, 'out.txt'), (l) => l.length >= before + 3, 20_000);
      assert.ok(lines.length >= before + 3, 'the restored process runs');
      assert.deepEqual(lines.filter((l) => !l.startsWith('ok ')), []);
    } finally {
      w.cleanup('memproc');
    }
  });

  it('follows a task that moves missing pages with mremap: every page is fetched for its new place', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok, caps.uffd.detail)) return;
    ensureCriuRoot();
    const w = testDir('remap');
    const { dir, host } = w;
    try {
      const pid = await startInRoot(dir, `/usr/local/bin/remapproc 128 ${dir}/out.txt`, `[ -s ${dir}/out.txt ]`, 'remapproc');
      const before = readFileSync(join(host, 'out.txt'), 'utf8').trim().split('\n').length;
      let restoredAt = 0;
      const onPhase = (phase: string) => {
        if (phase !== 'restored') return;
        w.restored = Number(readFileSync(join(host, 'restored.pid'), 'utf8'));
        restoredAt = Date.now();
      };
      // A slow push (a page at a time): the buffer moves many times while most of it is missing.
      const result = await withPipeSize(() => migrate({ pid, workDir: dir, criuPort: 27960 + (process.pid % 9), pushBatch: 1, pushWindow: 1, onPhase }));
      w.restored = result.restoredPid;
      assert.ok(result.pages! >= (128 << 20) / 4096 && result.all_present_ms > result.downtime_ms, JSON.stringify(result));
      const movesDuringPostcopy = Math.floor((Date.now() - restoredAt) / 200);
      const lines = await waitForLines(join(host, 'out.txt'), (l) => l.length >= before + movesDuringPostcopy + 2, 20_000);
      assert.ok(movesDuringPostcopy >= 2, `the buffer moved during post-copy (${movesDuringPostcopy} moves in ${Date.now() - restoredAt} ms)`);
      assert.ok(lines.length >= before + movesDuringPostcopy + 2, 'the restored process runs on');
      assert.deepEqual(lines.filter((l) => !l.startsWith('ok ')), [], 'every checksum after every move is right');
    } finally {
      w.cleanup('remapproc');
    }
  });

  it('serves the children a migrated task forks while pages are still missing', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok, caps.uffd.detail)) return;
    ensureCriuRoot();
    const w = testDir('fork');
    const { dir, host } = w;
    try {
      const pid = await startInRoot(dir, `/usr/local/bin/memproc 128 ${dir}/out.txt 1`, `[ -s ${dir}/out.txt ]`, 'memproc');
      const before = readFileSync(join(host, 'out.txt'), 'utf8').trim().split('\n').length;
      // It forks once OUT.fork exists: from the restore on, while pages are still missing.
      const onPhase = (phase: string) => phase === 'restored' && writeFileSync(join(host, 'out.txt.fork'), '');
      // A slow push (a page at a time, about 2 s for 128 MiB) so that the forks come while pages are missing.
      const result = await withPipeSize(() => migrate({ pid, workDir: dir, criuPort: 27980 + (process.pid % 9), pushBatch: 1, pushWindow: 1, onPhase }));
      w.restored = result.restoredPid;
      if (process.env.POSTCOPY_TEST_VERBOSE) console.log(JSON.stringify(result));
      const lines = await waitForLines(join(host, 'out.txt'), (all) => all.slice(before).filter((l) => l.startsWith('child ok ')).length >= 2, 20_000);
      const after = lines.slice(before);
      assert.ok(after.filter((l) => l.startsWith('child ok ')).length >= 2, `children keep checking after the restore: ${after.slice(0, 5).join(' | ')}`);
      assert.deepEqual(lines.filter((l) => !/^(child ok|wait) /.test(l)), [], 'every child saw every page right');
      assert.ok(result.forked! >= 1, `the task forked during post-copy (${result.forked} children served; ${JSON.stringify(result)})`);
    } finally {
      w.cleanup('memproc');
    }
  });

  for (const netns of [false, true]) {
    it(`migrates a process tree, each task served from its own frozen source, every page right${netns ? ', between two network namespaces' : ''}`, async (t) => {
      if (!need(t, caps.root && caps.uffd.ok, caps.uffd.detail)) return;
      ensureCriuRoot();
      const w = testDir(netns ? 'treens' : 'tree');
      const { dir, host } = w;
      try {
        // sh forks memproc A, then becomes memproc B: B is the tree's root (pid 1 of its namespace), A its child.
        const child = await startInRoot(dir, `sh -c '/usr/local/bin/memproc 48 ${dir}/a.txt & exec /usr/local/bin/memproc 64 ${dir}/b.txt'`, `[ -s ${dir}/a.txt ] && [ -s ${dir}/b.txt ]`, 'memproc');
        const stat = readFileSync(`/proc/${child}/stat`, 'utf8');
        const root = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        const files = ['a.txt', 'b.txt'].map((f) => join(host, f));
        const before = files.map((f) => readFileSync(f, 'utf8').trim().split('\n').length);
        const result = await withPipeSize(() => migrate({ pid: root, workDir: dir, criuPort: (netns ? 27930 : 27940) + (process.pid % 9), netns }));
        w.restored = result.restoredPid;
        if (process.env.POSTCOPY_TEST_VERBOSE) console.log(JSON.stringify(result));
        assert.equal(result.tasks, 2, 'both tasks of the tree served');
        for (const [i, file] of files.entries()) {
          const lines = await waitForLines(file, (all) => all.length >= before[i] + 2, 20_000);
          assert.ok(lines.length >= before[i] + 2, `${file}: the task keeps checking after the restore`);
          assert.deepEqual(lines.filter((l) => !l.startsWith('ok ')), [], `${file}: every page right`);
        }
      } finally {
        w.cleanup('memproc');
      }
    });
  }

  it('fails clearly when the disk for the images on the target is full, and the task runs on at the source', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok && caps.netns.ok, `${caps.uffd.detail}; ${caps.netns.detail}`)) return;
    ensureCriuRoot();
    const w = testDir('full');
    const { dir, host } = w;
    const targetImages = join(host, 'target', 'img');
    let mounted = false;
    try {
      const pid = await startInRoot(dir, `/usr/local/bin/memproc 64 ${dir}/out.txt`, `[ -s ${dir}/out.txt ]`, 'memproc');
      mkdirSync(targetImages, { recursive: true });
      const full = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=8k', 'tmpfs', targetImages], { encoding: 'utf8' });
      assert.equal(full.status, 0, full.stderr);
      mounted = true;
      const failure = await withPipeSize(() => migrate({ pid, workDir: dir, criuPort: 27950 + (process.pid % 9), netns: true, timeoutMs: 60_000 })).then(
        () => null,
        (e: { code?: string; message: string }) => e,
      );
      assert.ok(failure, 'the migration must fail');
      assert.match(failure.message, /cannot write image .*no space left on device/i);
      const before = readFileSync(join(host, 'out.txt'), 'utf8').trim().split('\n').length;
      const lines = await waitForLines(join(host, 'out.txt'), (l) => l.length >= before + 3, 20_000);
      assert.ok(lines.length >= before + 3 && !['gone', 'Z', 'X'].includes(taskState(pid)), `the task runs on at the source (state ${taskState(pid)})`);
      assert.deepEqual(lines.filter((l) => !l.startsWith('ok ')), []);
    } finally {
      if (mounted) spawnSync('umount', ['-l', targetImages]);
      w.cleanup('memproc');
    }
  });

  it('says clearly when the images directory is bad', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-badimg-'));
    try {
      await assert.rejects(serveLazyPages({ imagesDir: dir, source: { kind: 'criu', endpoint: { kind: 'tcp', host: '127.0.0.1', port: 1 } }, timeoutMs: 1000 }), isImageError);
      writeFileSync(join(dir, 'pstree.img'), Buffer.from('not an image at all'));
      await assert.rejects(serveLazyPages({ imagesDir: dir, source: { kind: 'criu', endpoint: { kind: 'tcp', host: '127.0.0.1', port: 1 } }, timeoutMs: 1000 }), /not a CRIU image/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
