#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { PostcopyError } from '../errors.js';
import { checkKey, parseKeyFile, type PresharedKey } from '../protocol/auth.js';
import { native } from '../native/index.js';
import { runDemo, type DemoResult } from '../demo/demo.js';
import { ImageFileSource } from '../source/image-file.js';
import { LiveProcessSource, type FreezeMethod } from '../source/live-process.js';
import type { MemorySource } from '../source/memory-source.js';
import { PageServer } from '../source/server.js';
import type { Grant } from '../source/session.js';
import { acceptOne, acknowledgeUffd, receiveUffd } from '../target/handoff.js';
import { FaultHandler, type Progress } from '../target/handler.js';
import { formatEndpoint, parseEndpoint, transportFor, type TlsMaterial } from '../transport/index.js';
import type { Endpoint } from '../transport/transport.js';
import { innermostPid, treeMember } from '../util/proctree.js';
import { createLogger } from '../util/log.js';
import { probeCapabilities } from '../util/preflight.js';
import { serveLazyPages } from '../criu/lazy-pages.js';
import { fetchImages, serveImages } from '../criu/image-transfer.js';
import { readFileSync } from 'node:fs';
import { criuStatus, ensureCriuRoot, withPipeSize } from '../criu/root.js';
import { migrate, releaseCriuDump, type MigrateMode } from '../criu/migrate.js';
import { readDump, taskLayout } from '../criu/image.js';
import { progressBar, stepBar } from './progress.js';
import { runBench, type BenchResult, type BenchTransport, type Link, type Placement } from '../bench/bench.js';
import { writePlot } from '../bench/plot.js';
import { formatReport } from '../bench/report.js';
import { formatCriuReport, runCriuBench, type CriuBenchResult } from '../bench/criu-bench.js';
import { formatLoadReport, runLoad, type LoadResult } from '../bench/load.js';

function int(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`"${value}" is not a non-negative integer`);
  return n;
}

function pageSize(value: string): number {
  const n = int(value);
  if (n !== 4096 && n !== 65536) throw new InvalidArgumentError('page size must be 4096 or 65536');
  return n;
}

function range(value: string, previous: { start: number; length: number }[] = []): { start: number; length: number }[] {
  const m = /^(0x[0-9a-fA-F]+|\d+):(0x[0-9a-fA-F]+|\d+)$/.exec(value);
  if (!m) throw new InvalidArgumentError('a range is START:LENGTH (decimal or 0x hex)');
  return [...previous, { start: Number(m[1]), length: Number(m[2]) }];
}

function print(json: boolean, data: object, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(data)}\n` : `${text}\n`);
}

const program = new Command('postcopy')
  .description('Remote page faults over userfaultfd, and post-copy migration built on them')
  .showHelpAfterError();

program
  .command('demo')
  .description('migrate a live 256 MiB workload on this machine, post-copy, and verify every page')
  .addOption(new Option('--mib <n>', 'workload state size in MiB').argParser(int).default(256))
  .addOption(new Option('--transport <kind>', 'tcp (loopback) or unix').choices(['tcp', 'unix']).default('tcp'))
  .addOption(new Option('--readahead <pages>', 'extra pages fetched with each fault').argParser(int).default(0))
  .option('--push-batch <pages>', 'pages per background request', int)
  .option('--push-window <n>', 'background requests in flight', int)
  .option('--json', 'print the result as JSON')
  .action(async (o: { mib: number; transport: 'tcp' | 'unix'; readahead: number; pushBatch?: number; pushWindow?: number; json?: boolean }) => {
    const bar = o.json ? null : progressBar();
    let result: DemoResult;
    try {
      result = await runDemo({ mib: o.mib, transport: o.transport, readahead: o.readahead, pushBatch: o.pushBatch, pushWindow: o.pushWindow, onProgress: bar?.update });
    } finally {
      bar?.stop();
    }
    if (o.json) return print(true, result, '');
    const lines = [
      `migrated ${result.pages} pages (${o.mib} MiB) over ${result.transport}`,
      `  faulted ${result.faulted}, pushed ${result.pushed}, zero ${result.zero}, ${result.faults} faults served`,
      `  downtime ${result.downtime_ms} ms, all pages present after ${result.total_ms} ms`,
      `  fault latency (handler) p50 ${result.fault_p50_us} us, p99 ${result.fault_p99_us} us`,
      `  the target ran ${result.steps_on_target} steps; ${result.self_check_failures} self-check failures`,
      `  verified every page against the source: ${result.mismatches} mismatches`,
    ];
    print(false, result, lines.join('\n'));
    if (result.mismatches !== 0 || result.self_check_failures !== 0) process.exitCode = 1;
  });

const DEFAULT_KEY_ID = 'postcopy';

/** The pre-shared key named by --key-file / --key-id, if any. */
function readKey(o: { keyFile?: string; keyId: string }): PresharedKey | undefined {
  if (!o.keyFile) return undefined;
  const key = { keyId: o.keyId, key: parseKeyFile(readFileSync(o.keyFile)) };
  checkKey(key);
  return key;
}

/** --tls-cert, --tls-key and --tls-ca, all three or none. */
function readTls(o: { tlsCert?: string; tlsKey?: string; tlsCa?: string }): TlsMaterial | undefined {
  const given = [o.tlsCert, o.tlsKey, o.tlsCa].filter(Boolean).length;
  if (given === 0) return undefined;
  if (given !== 3) throw new PostcopyError('ERR_INVALID_ARG', 'give --tls-cert, --tls-key and --tls-ca together');
  return { cert: readFileSync(o.tlsCert!), key: readFileSync(o.tlsKey!), ca: readFileSync(o.tlsCa!) };
}

/** A grants file: JSON [{keyId, key (hex), regions?}]. */
function readGrants(path: string): Grant[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new PostcopyError('ERR_INVALID_ARG', `cannot read the grants in ${path}: ${(err as Error).message}`);
  }
  if (!Array.isArray(parsed)) throw new PostcopyError('ERR_INVALID_ARG', `${path}: a JSON array of grants expected`);
  return parsed.map((g: { keyId?: unknown; key?: unknown; regions?: Grant['regions'] }, i) => {
    if (typeof g.keyId !== 'string' || typeof g.key !== 'string' || !/^[0-9a-fA-F]+$/.test(g.key)) throw new PostcopyError('ERR_INVALID_ARG', `${path}: grant ${i} needs a keyId and a hex key`);
    return { keyId: g.keyId, key: Buffer.from(g.key, 'hex'), regions: g.regions };
  });
}

program
  .command('serve')
  .description('serve pages of a frozen process or an image file')
  .option('--pid <pid>', 'a live process to freeze and serve', int)
  .option('--range <start:length>', 'serve only this range of the process (repeatable)', range)
  .addOption(new Option('--freeze <how>', 'how to freeze the process').choices(['sigstop', 'cgroup', 'none']).default('sigstop'))
  .option('--image <file>', 'a raw memory image to serve as one region')
  .option('--base <addr>', 'the address the image region claims', int, 0)
  .addOption(new Option('--page-size <bytes>', 'page size').argParser(pageSize).default(4096))
  .requiredOption('--listen <endpoint>', 'tcp://HOST:PORT or unix:PATH')
  .option('--release', 'kill the process once a target has every page')
  .option('--images <dir>', 'also serve this CRIU images directory (see lazy-pages --images-from)')
  .option('--images-listen <endpoint>', 'where to serve --images')
  .option('--dump <dir>', "with --pid: serve the lazy memory this task has in CRIU's dump DIR (`criu dump --lazy-pages` froze it, so --freeze none): its ranges, and which pages it had touched")
  .option('--criu-page-server <port>', "with --dump: once the target has every page, tell CRIU's page server on 127.0.0.1:PORT (`criu dump --port`) to close; the dump ends and the frozen task goes", int)
  .option('--key-file <file>', 'serve only targets that prove they hold this pre-shared key (hex text or raw bytes, at least 16)')
  .option('--key-id <id>', 'the name of that key', DEFAULT_KEY_ID)
  .option('--grants <file>', 'several keys, each with what it may read: JSON [{"keyId", "key" (hex), "regions"?: [{"region", "firstPage"?, "count"?}]}]')
  .option('--tls-cert <file>', 'with a tls:// endpoint: this end\'s certificate (PEM)')
  .option('--tls-key <file>', 'its private key (PEM)')
  .option('--tls-ca <file>', 'the CA that signs the other end\'s certificate (PEM); both ends must present one')
  .option('--json', 'JSON lines on stdout')
  .action(async (o: { pid?: number; range?: { start: number; length: number }[]; freeze: FreezeMethod; image?: string; base: number; pageSize: number; listen: string; release?: boolean; images?: string; imagesListen?: string; dump?: string; criuPageServer?: number; keyFile?: string; keyId: string; grants?: string; tlsCert?: string; tlsKey?: string; tlsCa?: string; json?: boolean }) => {
    if ((o.pid === undefined) === (o.image === undefined)) throw new PostcopyError('ERR_INVALID_ARG', 'give exactly one of --pid and --image');
    const log = createLogger('serve');
    if (o.criuPageServer !== undefined && !o.dump) throw new PostcopyError('ERR_INVALID_ARG', '--criu-page-server goes with --dump');
    const dumped = o.dump ? servedFromDump(o) : null;
    const source: MemorySource =
      o.pid !== undefined
        ? await LiveProcessSource.attach(o.pid, dumped ?? { pageSize: o.pageSize, freeze: o.freeze, ranges: o.range })
        : new ImageFileSource(o.image!, { pageSize: o.pageSize, base: o.base });
    const key = readKey(o);
    const grants = [...(key ? [key] : []), ...(o.grants ? readGrants(o.grants) : [])];
    const server = new PageServer(source, { logger: log, grants });
    const listener = await server.listen(transportFor(parseEndpoint(o.listen), readTls(o)));
    print(!!o.json, { event: 'listening', endpoint: formatEndpoint(listener.endpoint), regions: source.regions }, `serving ${source.regions.length} regions on ${formatEndpoint(listener.endpoint)}`);
    if (!!o.images !== !!o.imagesListen) throw new PostcopyError('ERR_INVALID_ARG', 'give --images and --images-listen together');
    const images = o.images ? await serveImages(o.images, parseEndpoint(o.imagesListen!)) : null;
    if (images) print(!!o.json, { event: 'images-listening', endpoint: formatEndpoint(images.endpoint) }, `serving the images of ${o.images} on ${formatEndpoint(images.endpoint)}`);
    const complete = await new Promise<boolean>((resolve) => {
      // One target, or with several keys, one per key: done once each has every page.
      const waiting = new Set(grants.length > 1 ? grants.map((g) => g.keyId) : []);
      server.on('done', (_id: number, keyId: string | null) => {
        waiting.delete(keyId ?? '');
        if (waiting.size === 0) resolve(true);
      });
      process.once('SIGINT', () => resolve(false));
      process.once('SIGTERM', () => resolve(false));
    });
    // Stopped before every target had every page: the source stays, frozen, for another try.
    if (complete && o.release && source instanceof LiveProcessSource) source.release();
    if (complete && o.criuPageServer !== undefined) releaseCriuDump(o.criuPageServer);
    print(!!o.json, { event: 'done', complete, stats: server.stats }, `${complete ? 'done' : 'stopped'}: ${server.stats.pagesSent} pages sent`);
    await images?.close();
    await server.close();
  });

/** serve --dump: the task's lazy ranges and touched pages from CRIU's dump, checked against the options. */
function servedFromDump(o: { pid?: number; dump?: string; range?: unknown; release?: boolean; criuPageServer?: number; pageSize: number }) {
  if (o.pid === undefined) throw new PostcopyError('ERR_INVALID_ARG', '--dump serves a task of the dump: give its --pid');
  if (o.range) throw new PostcopyError('ERR_INVALID_ARG', '--dump gives the ranges to serve: no --range with it');
  if (o.release) throw new PostcopyError('ERR_INVALID_ARG', "--dump: CRIU lets the task go when its dump ends (--criu-page-server), not --release");
  if (o.pageSize !== 4096) throw new PostcopyError('ERR_PAGE_SIZE', `CRIU dumps 4096-byte pages, not ${o.pageSize}`);
  const task = taskLayout(readDump(o.dump!), innermostPid(o.pid));
  // Ending the dump kills every task of it: a tree needs every source done first.
  if (o.criuPageServer !== undefined && task.tasks > 1)
    throw new PostcopyError('ERR_INVALID_ARG', `the dump holds ${task.tasks} tasks: end it once every task's serve is done, not from one (--criu-page-server)`);
  return { pageSize: 4096, freeze: 'none' as const, ranges: task.regions, touched: task.lazy };
}

program
  .command('attach')
  .description('resolve faults of a process that hands its userfaultfd over a Unix socket')
  .requiredOption('--connect <endpoint>', 'the source: tcp://HOST:PORT or unix:PATH')
  .option('--uffd-socket <path>', 'Unix socket where the process sends its userfaultfd')
  .option('--recover-at <path>', 'if this daemon dies, its keeper waits on this Unix socket for `attach --recover` to take over')
  .option('--recover-grace <seconds>', 'how long the keeper waits there before it kills the process', int, 30)
  .option('--recover <path>', 'instead of --uffd-socket: take over the migration of a daemon that died (its --recover-at)')
  .addOption(new Option('--page-size <bytes>', 'page size').argParser(pageSize).default(4096))
  .option('--readahead <pages>', 'extra pages fetched with each fault', int, 0)
  .option('--no-push', 'fetch on fault only, no background push')
  .option('--timeout <seconds>', 'how long to wait for the process', int, 300)
  .option('--key-file <file>', "the migration's pre-shared key, when the source asks for one")
  .option('--key-id <id>', 'the name of that key', DEFAULT_KEY_ID)
  .option('--resume-timeout <seconds>', 'after a lost connection, keep reconnecting this long before failing', int, 30)
  .option('--reply-timeout <ms>', 'a reply that brings no byte for this long counts as a lost connection', int, 10_000)
  .option('--tls-cert <file>', 'with a tls:// source: this end\'s certificate (PEM)')
  .option('--tls-key <file>', 'its private key (PEM)')
  .option('--tls-ca <file>', 'the CA that signs the source\'s certificate (PEM)')
  .option('--json', 'print the result as JSON')
  .action(async (o: { connect: string; uffdSocket?: string; recoverAt?: string; recoverGrace: number; recover?: string; pageSize: number; readahead: number; push: boolean; timeout: number; keyFile?: string; keyId: string; resumeTimeout: number; replyTimeout: number; tlsCert?: string; tlsKey?: string; tlsCa?: string; json?: boolean }) => {
    const log = createLogger('attach');
    if (!o.uffdSocket === !o.recover) throw new PostcopyError('ERR_INVALID_ARG', 'give exactly one of --uffd-socket and --recover');
    const options = {
      endpoint: parseEndpoint(o.connect),
      readahead: o.readahead,
      push: o.push,
      key: readKey(o),
      tls: readTls(o),
      resumeTimeoutMs: o.resumeTimeout * 1000,
      replyTimeoutMs: o.replyTimeout,
      recoverAt: o.recoverAt ? { path: o.recoverAt, graceMs: o.recoverGrace * 1000 } : undefined,
      logger: log,
    };
    const listenFd = o.uffdSocket ? native.unixListen(o.uffdSocket) : -1;
    let handler: FaultHandler | null = null;
    try {
      if (o.recover) {
        handler = await FaultHandler.recover(o.recover, options, o.timeout * 1000);
      } else {
        const conn = await acceptOne(listenFd, o.timeout * 1000);
        const handoff = await receiveUffd(conn, o.timeout * 1000);
        handler = await FaultHandler.start({ ...options, uffd: handoff.uffd, mappings: handoff.mappings, pageSize: o.pageSize, targetPid: handoff.pid || undefined });
        acknowledgeUffd(conn);
        native.close(conn);
      }
      const bar = o.json ? null : progressBar();
      const tick = bar ? setInterval(() => bar.update(handler!.progress), 100) : null;
      const report = await handler.done().finally(() => {
        if (tick) clearInterval(tick);
        bar?.stop();
      });
      print(!!o.json, report, `every page present: ${report.faulted} faulted, ${report.pushed} pushed, ${report.zero} zero`);
    } finally {
      await handler?.stop();
      if (listenFd >= 0) native.close(listenFd);
    }
  });

function list<T extends string | number>(parse: (v: string) => T, allowed: readonly T[]) {
  return (value: string): T[] => {
    const items = value.split(',').map((v) => parse(v.trim()));
    for (const it of items) if (!allowed.includes(it)) throw new InvalidArgumentError(`"${it}" is not one of ${allowed.join(', ')}`);
    return [...new Set(items)];
  };
}

program
  .command('bench')
  .description("the report's remote page-fault benchmark, ours beside the C reference (needs root for veth)")
  .option('--trials <n>', 'measured trials (one more warms up)', int, 50)
  .option('--faults <n>', 'faults per trial', int, 1000)
  .option('--warmup <n>', 'trials run first and dropped, both sides (JIT warm-up)', int, 5)
  .option('--page-size <list>', 'page sizes: 4096, 65536 (comma list)', list(int, [4096, 65536]), [4096, 65536])
  .option('--transport <list>', 'tcp, unix (comma list; unix runs on loopback only)', list(String, ['tcp', 'unix']), ['tcp', 'unix'])
  .option('--link <list>', 'loopback, veth (comma list)', list(String, ['loopback', 'veth']), ['loopback', 'veth'])
  .option('--mtu <list>', 'veth MTUs: 1500, 4200, 9000 (comma list)', list(int, [1500, 4200, 9000]), [1500, 4200, 9000])
  .addOption(new Option('--placement <where>', 'same: every thread on CPU 0; cross: server on CPU 1; auto: unpinned').choices(['same', 'cross', 'auto']).default('same'))
  .option('--criu', 'instead: stock CRIU lazy-pages against postcopy migrate, on memproc and redis')
  .option('--memproc-mib <n>', '--criu: memproc size', int, 512)
  .option('--redis-keys <n>', '--criu: redis keys', int, 1_000_000)
  .option('--runs <n>', '--criu: runs per workload and mode', int, 3)
  .option('--workload <list>', '--criu: memproc, redis (comma list)', list(String, ['memproc', 'redis']), ['memproc', 'redis'])
  .option('--push-batch <pages>', "--criu: postcopy's pages per background request (migrate's default otherwise)", int)
  .option('--push-window <n>', "--criu: postcopy's background requests in flight", int)
  .option('--checksums', '--criu: postcopy with a CRC32C with every page (migrate checks none over loopback)')
  .option('--warm-up', '--criu: memory warmed before the freeze, in both modes (see migrate --warm-up)')
  .option('--idle-before <seconds>', '--criu: wait this long before each freeze, the workload running (freed memory may go back to the host meanwhile)', int)
  .option('--load <targets>', 'instead: one source serving this many targets at once, each migrating --load-mib through network namespaces', int)
  .option('--load-mib <n>', '--load: MiB per target', int, 64)
  .option('--json', 'print every figure as JSON instead of the tables')
  .option('--plot <file>', 'write a bar chart, FILE.svg or FILE.png')
  .action(async (o: { trials: number; warmup: number; faults: number; pageSize: number[]; transport: BenchTransport[]; link: Link[]; mtu: number[]; placement: Placement; json?: boolean; plot?: string; criu?: boolean; memprocMib: number; redisKeys: number; runs: number; workload: ('memproc' | 'redis')[]; pushBatch?: number; pushWindow?: number; checksums?: boolean; warmUp?: boolean; idleBefore?: number; load?: number; loadMib: number }) => {
    const bar = stepBar();
    if (o.load !== undefined) {
      let r: LoadResult;
      try {
        r = await runLoad({ targets: o.load, mib: o.loadMib, onProgress: (done, total) => bar?.update(done, total, 'targets done') });
      } finally {
        bar?.stop();
      }
      print(!!o.json, r, formatLoadReport(r));
      if (r.lost > 0) process.exitCode = 1;
      return;
    }
    if (o.criu) {
      let r: CriuBenchResult;
      try {
        r = await runCriuBench({ memprocMiB: o.memprocMib, redisKeys: o.redisKeys, runs: o.runs, workloads: o.workload, pushBatch: o.pushBatch, pushWindow: o.pushWindow, checksums: o.checksums, warmUp: o.warmUp, idleBefore: o.idleBefore, onProgress: bar?.update });
      } finally {
        bar?.stop();
      }
      print(!!o.json, r, formatCriuReport(r));
      if (r.runs.some((x) => !x.verified)) process.exitCode = 1;
      return;
    }
    let result: BenchResult;
    try {
      result = await runBench({ trials: o.trials, warmup: o.warmup, faults: o.faults, pageSizes: o.pageSize, transports: o.transport, links: o.link, mtus: o.mtu, placement: o.placement, onProgress: bar?.update });
    } finally {
      bar?.stop();
    }
    if (o.plot) await writePlot(result, o.plot);
    print(!!o.json, result, formatReport(result));
  });

program
  .command('criu-setup')
  .description('build the Debian trixie root that CRIU 4.x runs in (once; needs root and the Debian mirror)')
  .action(() => {
    const root = ensureCriuRoot();
    const status = criuStatus();
    print(false, {}, `${root}\n${status.detail}`);
    if (!status.ok) process.exitCode = 1;
  });

program
  .command('lazy-pages')
  .description('take the place of `criu lazy-pages`: serve the faults of `criu restore --lazy-pages` from CRIU\'s page server')
  .requiredOption('--images <dir>', 'the dump directory (criu restore connects to lazy-pages.socket in it)')
  .requiredOption('--page-server <endpoint...>', 'the source: tcp://HOST:PORT of `criu dump --lazy-pages`, or of `postcopy serve` with --source postcopy; for a process tree, one PID=ENDPOINT per task (PID as the dump names it)')
  .addOption(new Option('--source <kind>', "criu: CRIU's page server; postcopy: `postcopy serve` over the frozen task").choices(['criu', 'postcopy']).default('criu'))
  .option('--images-from <endpoint>', 'fetch the images first, from `postcopy serve --images-listen`')
  .option('--pidfile <path>', "the restored task's pid file (`criu restore --pidfile`): killed (with its tree) if its pages cannot be fetched")
  .option('--no-push', 'fetch on fault only, no background push')
  .option('--push-batch <pages>', 'pages per background request', int)
  .option('--push-window <n>', 'background requests in flight', int)
  .option('--no-checksums', 'ask a postcopy source for no CRC32C with each page (both ends on one kernel)')
  .option('--timeout <seconds>', 'how long to wait for criu restore', int, 300)
  .option('--key-file <file>', "the migration's pre-shared key (--source postcopy), when the source asks for one")
  .option('--key-id <id>', 'the name of that key', DEFAULT_KEY_ID)
  .option('--json', 'JSON lines on stdout')
  .action(async (o: { images: string; pageServer: string[]; source: 'criu' | 'postcopy'; imagesFrom?: string; pidfile?: string; push: boolean; pushBatch?: number; pushWindow?: number; checksums: boolean; timeout: number; keyFile?: string; keyId: string; json?: boolean }) => {
    const log = createLogger('lazy-pages');
    if (o.imagesFrom) {
      const names = await fetchImages(parseEndpoint(o.imagesFrom), o.images, o.timeout * 1000);
      print(!!o.json, { event: 'images', files: names.length }, `fetched ${names.length} image files into ${o.images}`);
    }
    const rootPid = () => {
      try {
        return o.pidfile ? Number(readFileSync(o.pidfile, 'utf8').trim()) || undefined : undefined;
      } catch {
        return undefined;
      }
    };
    // A task of the restored tree, by the pid the dump gives it.
    const targetPid = treeMember(rootPid);
    const result = await serveLazyPages({
      imagesDir: o.images,
      source: { kind: o.source, endpoint: sourceEndpoints(o.pageServer) },
      push: o.push,
      pushBatch: o.pushBatch,
      pushWindow: o.pushWindow,
      checksums: o.checksums,
      targetPid,
      timeoutMs: o.timeout * 1000,
      key: readKey(o),
      logger: log,
      onListening: () => print(!!o.json, { event: 'listening', socket: `${o.images}/lazy-pages.socket` }, `waiting for criu restore on ${o.images}/lazy-pages.socket`),
    });
    const lines = result.tasks.map(({ pid, report: r }) => `task ${pid}: ${r.pages} pages, ${r.faulted} faulted, ${r.pushed} pushed, ${r.zero} zero, fault p50 ${((r.latency?.p50Ns ?? 0) / 1000).toFixed(1)} us`);
    print(!!o.json, { event: 'done', ...result }, [...lines, `every page present ${result.ms} ms after the restore connected`].join('\n'));
  });

program
  .command('migrate')
  .description('post-copy migration of a process with stock CRIU: CRIU moves the state, postcopy the memory')
  .requiredOption('--pid <pid>', 'the task, running in the CRIU root (see `postcopy criu-setup`)', int)
  .addOption(new Option('--mode <mode>', "postcopy, or stock (CRIU's own lazy-pages, the baseline)").choices(['postcopy', 'stock']).default('postcopy'))
  .option('--work-dir <dir>', 'images and logs, a path inside the CRIU root')
  .option('--criu-port <port>', "port of CRIU's page server on loopback", int, 27001)
  .option('--netns', 'run the source and the target in two network namespaces joined by a veth pair')
  .option('--checksums', 'a CRC32C with every page (default: only with --netns; over loopback the kernel is all that carries them)')
  .option('--no-checksums', 'no CRC32C with the pages, with --netns too')
  .option('--warm-up', 'write and free as much memory as the tasks hold just before the freeze (on a VM that hands free pages back to its host)')
  .option('--json', 'print the result as JSON')
  .action(async (o: { pid: number; mode: MigrateMode; workDir?: string; criuPort: number; netns?: boolean; checksums?: boolean; warmUp?: boolean; json?: boolean }) => {
    ensureCriuRoot();
    const workDir = o.workDir ?? `/var/lib/postcopy/migrate-${o.pid}`;
    const result = await withPipeSize(() =>
      migrate({ pid: o.pid, mode: o.mode, workDir, criuPort: o.criuPort, netns: o.netns, checksums: o.checksums, warmUp: o.warmUp, logger: createLogger('migrate'), onPhase: o.json ? undefined : (p, ms) => process.stderr.write(`${String(ms).padStart(6)} ms  ${p}\n`) }),
    );
    print(!!o.json, result, `migrated ${o.pid} -> ${result.restoredPid}: downtime ${result.downtime_ms} ms, every page present after ${result.all_present_ms} ms`);
  });

program
  .command('doctor')
  .description('report userfaultfd, privileges, kernel features and CRIU')
  .option('--json', 'print as JSON')
  .action((o: { json?: boolean }) => {
    const c = probeCapabilities();
    const mark = (ok: boolean) => (ok ? 'ok  ' : 'MISSING');
    const text = [
      `kernel          ${c.kernel}`,
      `root            ${c.root ? 'yes' : 'no'}`,
      `userfaultfd     ${mark(c.uffd.ok)} ${c.uffd.detail}${c.uffd.features ? ` (features: ${c.uffd.features.join(', ')})` : ''}`,
      `process memory  ${mark(c.processVmReadv.ok)} ${c.processVmReadv.detail}`,
      `netns/veth      ${mark(c.netns.ok)} ${c.netns.detail}`,
      `criu            ${mark(c.criu.ok)} ${c.criu.detail}`,
    ].join('\n');
    print(!!o.json, c, text);
  });

/** `--page-server` values: one endpoint, or PID=ENDPOINT for each task of a tree. */
function sourceEndpoints(values: string[]): Endpoint | ((pid: number) => Endpoint) {
  if (values.length === 1 && !/^\d+=/.test(values[0])) return parseEndpoint(values[0]);
  const byPid = new Map<number, Endpoint>();
  for (const v of values) {
    const m = /^(\d+)=(.+)$/.exec(v);
    if (!m) throw new PostcopyError('ERR_INVALID_ARG', `--page-server ${v}: several sources are given as PID=ENDPOINT, one per task`);
    byPid.set(Number(m[1]), parseEndpoint(m[2]));
  }
  return (pid) => {
    const e = byPid.get(pid);
    if (!e) throw new PostcopyError('ERR_INVALID_ARG', `no --page-server for task ${pid} of the dump`);
    return e;
  };
}

export async function main(argv: string[]): Promise<void> {
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const e = err as PostcopyError;
    process.stderr.write(`postcopy: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
    process.exitCode = e.code === 'ERR_PRIVILEGE' ? 77 : 1;
  }
}

await main(process.argv);
