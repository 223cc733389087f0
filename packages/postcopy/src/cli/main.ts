#!/usr/bin/env node
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { PostcopyError } from '../errors.js';
import { checkKey, parseKeyFile, type PresharedKey } from '../protocol/auth.js';
import { native } from '../native/index.js';
import { runDemo, type DemoResult } from '../demo/demo.js';
import { ImageFileSource } from '../source/image-file.js';
import { checkAligned, checkRanges, LiveProcessSource, type FreezeMethod } from '../source/live-process.js';
import type { MemorySource } from '../source/memory-source.js';
import { PageServer } from '../source/server.js';
import type { Grant } from '../source/session.js';
import { acceptOne, acknowledgeUffd, receiveUffd } from '../target/handoff.js';
import { checkPushSettings, FaultHandler } from '../target/handler.js';
import { formatEndpoint, parseEndpoint, transportFor, type TlsMaterial } from '../transport/index.js';
import type { Endpoint, Listener } from '../transport/transport.js';
import { innermostPid, treeMember } from '../util/proctree.js';
import { createLogger } from '../util/log.js';
import { probeCapabilities } from '../util/preflight.js';
import { LAZY_PAGES_SOCKET, serveLazyPages, type LazyPagesSource } from '../criu/lazy-pages.js';
import { fetchImages, serveImages } from '../criu/image-transfer.js';
import { accessSync, constants as fsConstants, fstatSync, readFileSync, statSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { criuStatus, ensureCriuRoot, inetNote, probeHostTools, toolChoice, withPipeSize } from '../criu/root.js';
import { migrate, releaseCriuDump, type MigrateMode } from '../criu/migrate.js';
import { readDump, taskLayout } from '../criu/image.js';
import { progressBar, stepBar } from './progress.js';
import { runBench, type BenchResult, type BenchTransport, type Link, type Placement } from '../bench/bench.js';
import { checkPlotFile, writePlot, writeSpec } from '../bench/plot.js';
import { checkCosts, checkHostClass } from '../util/power-model.js';
import { formatSimulation, parseTrace, powerPlotSpec, simulate } from '../plan/simulate.js';
import { formatReport } from '../bench/report.js';
import { formatCriuReport, runCriuBench, type CriuBenchResult, type CriuWorkload } from '../bench/criu-bench.js';
import { formatLoadReport, runLoad, type LoadResult } from '../bench/load.js';
import { formatContainerReport, runContainerBench, type ContainerBenchResult, type ContainerWorkload } from '../bench/container-bench.js';
import { isName } from '../protocol/schema.js';
import { formatCliEvent, type CliCommand, type CliEventName, type CliEvents } from '../protocol/cli-events.js';
import { checkContainerId, checkPathInRoot } from '../criu/runc.js';
import { Agent, AGENT_SOCKET, connectAgent, migrateThroughAgent, peerEndpoint } from '../agent/agent.js';
import { formatLivePlan, planLive } from '../plan/live.js';
import { mergeWorkingSets, type WorkingSet } from '../protocol/working-set.js';
import { readWorkingSetFile, writeWorkingSetFile } from '../util/working-set-file.js';
import type { PushPriority } from '../util/push-priority.js';

function int(value: string): number {
  const n = value.trim() === '' ? NaN : Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`"${value}" is not a non-negative integer`);
  return n;
}

/** An integer option of at least `min` (and at most `max`). */
function intIn(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = int(value);
    if (n < min || n > max) throw new InvalidArgumentError(max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `${min} to ${max}`);
    return n;
  };
}

/** A count that must not be 0. */
const positive = intIn(1);
/** A timer's span: setTimeout takes at most 2^31-1 ms (more fires at once). */
const MAX_TIMER_MS = 2 ** 31 - 1;
const seconds = intIn(1, Math.floor(MAX_TIMER_MS / 1000));
const secondsOrNone = intIn(0, Math.floor(MAX_TIMER_MS / 1000));
const millis = intIn(1, MAX_TIMER_MS);
/** A TCP port to connect to. */
const port = intIn(1, 65535);

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

/** An event of a command (protocol/cli-events.ts): its JSON line with --json, else the text. */
function printEvent<C extends CliCommand, E extends CliEventName<C>>(json: boolean, command: C, event: E, fields: CliEvents[C][E], text: string): void {
  process.stdout.write(json ? `${formatCliEvent(command, event, fields)}\n` : `${text}\n`);
}

// Checks of arguments, one per kind, each throwing ERR_INVALID_ARG that names the option. Every
// command runs all of its checks before it freezes a process, takes a userfaultfd or listens.

const invalid = (message: string) => new PostcopyError('ERR_INVALID_ARG', message);

/** Whether an option was given on the command line (not its default). */
const given = (cmd: Command, name: string) => cmd.getOptionValueSource(name) === 'cli';

function statOf(option: string, path: string): Stats {
  try {
    return statSync(path);
  } catch (err) {
    throw invalid(`${option} ${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (err as Error).message}`);
  }
}

/** A file that exists and that we may read. */
function fileArg(option: string, path: string): string {
  if (!statOf(option, path).isFile()) throw invalid(`${option} ${path}: not a regular file`);
  try {
    accessSync(path, fsConstants.R_OK);
  } catch (err) {
    throw invalid(`${option} ${path}: cannot read it (${(err as Error).message})`);
  }
  return path;
}

/** The bytes of such a file. */
function readArg(option: string, path: string): Buffer {
  fileArg(option, path);
  try {
    return readFileSync(path);
  } catch (err) {
    throw invalid(`${option} ${path}: cannot read it (${(err as Error).message})`);
  }
}

/** A directory that exists. */
function dirArg(option: string, path: string): string {
  if (!statOf(option, path).isDirectory()) throw invalid(`${option} ${path}: not a directory`);
  return path;
}

/**
 * Where a Unix socket can be made (listen: in a directory that exists, and where nothing but an old
 * socket is, which listening replaces) or looked for (connect).
 */
function socketPathArg(option: string, path: string, use: 'listen' | 'connect'): string {
  if (Buffer.byteLength(path) > 107) throw invalid(`${option} ${path}: a Unix socket path has at most 107 bytes`);
  if (use === 'listen') {
    dirArg(`${option}'s directory`, dirname(path));
    const there = statOrNull(path);
    if (there && !there.isSocket()) throw invalid(`${option} ${path}: something that is not a socket is there (it would be removed)`);
  }
  return path;
}

/** A live process, not this one. */
function pidArg(option: string, pid: number): number {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    throw invalid(`${option} ${pid}: no such process`);
  }
  if (pid < 1 || stat.charAt(stat.lastIndexOf(')') + 2) === 'Z') throw invalid(`${option} ${pid}: no such process (it has exited)`);
  if (pid === process.pid) throw invalid(`${option} ${pid}: that is this postcopy process`);
  return pid;
}

/** A port in range: 1-65535, or 0 too where 0 asks for any free one. */
function portArg(option: string, n: number, zero = false): number {
  if (!Number.isSafeInteger(n) || n < (zero ? 0 : 1) || n > 65535) throw invalid(`${option} ${n}: a port is ${zero ? 0 : 1} to 65535`);
  return n;
}

/**
 * An endpoint of one of the allowed kinds: a known scheme, a port in range (to connect: not 0), a
 * Unix path that fits (to listen: in a directory that exists).
 */
function endpointArg(option: string, text: string, use: 'listen' | 'connect', kinds: readonly Endpoint['kind'][] = ['tcp', 'tls', 'unix']): Endpoint {
  let e: Endpoint;
  try {
    e = parseEndpoint(text);
  } catch (err) {
    throw invalid(`${option}: ${(err as Error).message}`);
  }
  if (!kinds.includes(e.kind)) throw invalid(`${option} ${text}: ${kinds.map((k) => (k === 'unix' ? 'unix:PATH' : `${k}://HOST:PORT`)).join(' or ')} here`);
  if (e.kind === 'unix') socketPathArg(option, e.path, use);
  else portArg(`${option} ${text}:`, e.port, use === 'listen');
  return e;
}

/** TLS material goes with a tls:// endpoint, and a tls:// endpoint needs it. */
function checkTlsPairing(option: string, e: Endpoint, tls: TlsMaterial | undefined): void {
  if (e.kind === 'tls' && !tls) throw invalid(`${option}: a tls:// endpoint needs --tls-cert, --tls-key and --tls-ca`);
  if (e.kind !== 'tls' && tls) throw invalid(`--tls-cert, --tls-key and --tls-ca go with a tls:// endpoint, not ${formatEndpoint(e)}`);
}

/** Where a command listens, as a PostcopyError when it cannot (the port is taken, say). */
async function listenOn(option: string, endpoint: Endpoint, listen: () => Promise<Listener>): Promise<Listener> {
  try {
    return await listen();
  } catch (err) {
    if (err instanceof PostcopyError) throw err;
    throw invalid(`${option} ${formatEndpoint(endpoint)}: cannot listen there (${(err as Error).message})`);
  }
}

const program = new Command('postcopy')
  .description('Remote page faults over userfaultfd, and post-copy migration built on them')
  .showHelpAfterError()
  // Usage errors (an unknown option, a bad number) carry our code too, and end in main() (the
  // commands below inherit this).
  .exitOverride()
  .configureOutput({ outputError: (text, write) => write(`postcopy: ERR_INVALID_ARG: ${text.replace(/^error: /, '')}`) });

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
function readKey(o: { keyFile?: string; keyId: string }, cmd: Command): PresharedKey | undefined {
  if (!o.keyFile) {
    if (given(cmd, 'keyId')) throw invalid('--key-id names the key of --key-file: give both');
    return undefined;
  }
  const key = { keyId: o.keyId, key: parseKeyFile(readArg('--key-file', o.keyFile)) };
  try {
    checkKey(key);
  } catch (err) {
    throw invalid(`--key-file ${o.keyFile} (--key-id ${JSON.stringify(o.keyId)}): ${(err as Error).message}`);
  }
  return key;
}

/** --tls-cert, --tls-key and --tls-ca, all three or none, each readable PEM that TLS accepts. */
function readTls(o: { tlsCert?: string; tlsKey?: string; tlsCa?: string }): TlsMaterial | undefined {
  const count = [o.tlsCert, o.tlsKey, o.tlsCa].filter((f) => f !== undefined).length;
  if (count === 0) return undefined;
  if (count !== 3) throw invalid('give --tls-cert, --tls-key and --tls-ca together');
  const tls = { cert: readArg('--tls-cert', o.tlsCert!), key: readArg('--tls-key', o.tlsKey!), ca: readArg('--tls-ca', o.tlsCa!) };
  try {
    createSecureContext(tls);
  } catch (err) {
    throw invalid(`--tls-cert ${o.tlsCert}, --tls-key ${o.tlsKey}, --tls-ca ${o.tlsCa}: ${(err as Error).message}`);
  }
  return tls;
}

const isCount = (v: unknown) => v === undefined || (Number.isSafeInteger(v) && (v as number) >= 0);

/** A grants file: JSON [{keyId, key (hex), regions?: [{region, firstPage?, count?}]}], each key id once. */
function readGrants(path: string): Grant[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readArg('--grants', path).toString('utf8'));
  } catch (err) {
    if (err instanceof PostcopyError) throw err;
    throw invalid(`--grants ${path}: ${(err as Error).message}`);
  }
  if (!Array.isArray(parsed) || parsed.length === 0) throw invalid(`--grants ${path}: a JSON array of grants expected`);
  const grants = parsed.map((g: { keyId?: unknown; key?: unknown; regions?: unknown } | null, i): Grant => {
    const bad = (why: string) => invalid(`--grants ${path}: grant ${i} ${why}`);
    if (!g || typeof g.keyId !== 'string' || typeof g.key !== 'string' || !/^([0-9a-fA-F]{2})+$/.test(g.key)) throw bad('needs a keyId and a hex key');
    const regions = g.regions as Grant['regions'];
    if (regions !== undefined && !(Array.isArray(regions) && regions.every((r) => r && Number.isSafeInteger(r.region) && r.region >= 0 && isCount(r.firstPage) && isCount(r.count))))
      throw bad('has regions that are not [{"region": N, "firstPage"?: N, "count"?: N}]');
    const grant = { keyId: g.keyId, key: Buffer.from(g.key, 'hex'), regions };
    try {
      checkKey(grant);
    } catch (err) {
      throw bad(`(${JSON.stringify(g.keyId)}): ${(err as Error).message}`);
    }
    return grant;
  });
  return grants;
}

/** --key-file and --grants together: the keys a target may prove, each key id once. */
function readGrantsAndKey(o: { keyFile?: string; keyId: string; grants?: string }, cmd: Command): Grant[] {
  const key = readKey(o, cmd);
  const grants = [...(key ? [key] : []), ...(o.grants ? readGrants(o.grants) : [])];
  const ids = grants.map((g) => g.keyId);
  const twice = ids.find((id, i) => ids.indexOf(id) !== i);
  if (twice !== undefined) throw invalid(`key id ${JSON.stringify(twice)} is given twice (--key-file, --grants): a target could not tell which`);
  return grants;
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
  .option('--criu-page-server <port>', "with --dump: once the target has every page, tell CRIU's page server on 127.0.0.1:PORT (`criu dump --port`) to close; the dump ends and the frozen task goes", port)
  .option('--key-file <file>', 'serve only targets that prove they hold this pre-shared key (hex text or raw bytes, at least 16)')
  .option('--key-id <id>', 'the name of that key', DEFAULT_KEY_ID)
  .option('--grants <file>', 'several keys, each with what it may read: JSON [{"keyId", "key" (hex), "regions"?: [{"region", "firstPage"?, "count"?}]}]')
  .option('--tls-cert <file>', 'with a tls:// endpoint: this end\'s certificate (PEM)')
  .option('--tls-key <file>', 'its private key (PEM)')
  .option('--tls-ca <file>', 'the CA that signs the other end\'s certificate (PEM); both ends must present one')
  .option('--json', 'JSON lines on stdout')
  .action(async (o: ServeOptions, cmd: Command) => {
    const log = createLogger('serve');
    const args = checkServe(o, cmd);
    const source: MemorySource =
      o.pid !== undefined
        ? await LiveProcessSource.attach(o.pid, args.dumped ?? { pageSize: o.pageSize, freeze: o.freeze, ranges: o.range })
        : new ImageFileSource(o.image!, { pageSize: o.pageSize, base: o.base });
    // From here the process is frozen: whatever fails before we serve lets it go again.
    let server: PageServer | null = null;
    let images: Listener | null = null;
    try {
      const pages = new PageServer(source, { logger: log, grants: args.grants });
      server = pages;
      const listener = await listenOn('--listen', args.listen, () => pages.listen(transportFor(args.listen, args.tls)));
      printEvent(!!o.json, 'serve', 'listening', { endpoint: formatEndpoint(listener.endpoint), regions: source.regions }, `serving ${source.regions.length} regions on ${formatEndpoint(listener.endpoint)}`);
      if (args.imagesListen) images = await listenOn('--images-listen', args.imagesListen, () => serveImages(o.images!, args.imagesListen!));
      if (images) printEvent(!!o.json, 'serve', 'images-listening', { endpoint: formatEndpoint(images.endpoint) }, `serving the images of ${o.images} on ${formatEndpoint(images.endpoint)}`);
    } catch (err) {
      try {
        if (source instanceof LiveProcessSource) source.thaw();
      } finally {
        await images?.close();
        await server?.close();
      }
      throw err;
    }
    // Done once every target is (PageServer.isComplete): no connection open, a DONE, and none that
    // ended otherwise without a DONE on a connection accepted after it (a resumed one); with several
    // keys, one target per key. A task that forks during post-copy has its child served by a handler
    // of its own, connected here before the parent's handler closes. The 200 ms grace with no
    // connection is for what that cannot see coming: a connection opened just after the last one
    // closed (a late fork child, a handler that connects its threads one after the other). A lost
    // connection holds completion by itself until its target reconnects, however long that takes.
    const complete = await new Promise<boolean>((resolve) => {
      void server.whenComplete({ keyIds: args.grants.length > 1 ? args.grants.map((g) => g.keyId) : [], graceMs: 200 }).then(() => resolve(true));
      process.once('SIGINT', () => resolve(false));
      process.once('SIGTERM', () => resolve(false));
    });
    // Stopped before every target had every page: the source stays, frozen, for another try.
    if (complete && o.release && source instanceof LiveProcessSource) source.release();
    if (complete && o.criuPageServer !== undefined) releaseCriuDump(o.criuPageServer);
    printEvent(!!o.json, 'serve', 'done', { complete, stats: { ...server.stats } }, `${complete ? 'done' : 'stopped'}: ${server.stats.pagesSent} pages sent`);
    await images?.close();
    await server.close();
  });

interface ServeOptions {
  pid?: number;
  range?: { start: number; length: number }[];
  freeze: FreezeMethod;
  image?: string;
  base: number;
  pageSize: number;
  listen: string;
  release?: boolean;
  images?: string;
  imagesListen?: string;
  dump?: string;
  criuPageServer?: number;
  keyFile?: string;
  keyId: string;
  grants?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  json?: boolean;
}

/** Every argument of serve, checked before anything is frozen: what the command will use. */
function checkServe(o: ServeOptions, cmd: Command) {
  if ((o.pid === undefined) === (o.image === undefined)) throw invalid('give exactly one of --pid and --image');
  if (o.pid !== undefined) {
    pidArg('--pid', o.pid);
    if (given(cmd, 'base')) throw invalid('--base goes with --image (a process has its own addresses)');
  } else {
    if (o.dump) throw invalid('--dump serves a task of the dump: give its --pid');
    for (const [flag, name] of [['--range', 'range'], ['--release', 'release'], ['--freeze', 'freeze']] as const)
      if (given(cmd, name)) throw invalid(`${flag} goes with --pid`);
    fileArg('--image', o.image!);
    if (statOf('--image', o.image!).size === 0) throw invalid(`--image ${o.image}: the file is empty`);
  }
  if (o.dump && given(cmd, 'freeze') && o.freeze !== 'none') throw invalid('--dump: `criu dump --lazy-pages` keeps the task frozen (--freeze none)');
  if (o.criuPageServer !== undefined && !o.dump) throw invalid('--criu-page-server goes with --dump');
  if (o.dump) dirArg('--dump', o.dump);
  for (const r of o.range ?? []) checkAligned(r, o.pageSize);
  const dumped = o.dump ? servedFromDump(o) : null;
  if (o.pid !== undefined && !dumped && o.range) checkRanges(o.pid, o.range);
  const tls = readTls(o);
  const listen = endpointArg('--listen', o.listen, 'listen');
  checkTlsPairing('--listen', listen, tls);
  if (!!o.images !== !!o.imagesListen) throw invalid('give --images and --images-listen together');
  if (o.images) dirArg('--images', o.images);
  const imagesListen = o.imagesListen ? endpointArg('--images-listen', o.imagesListen, 'listen', ['tcp', 'unix']) : null;
  const grants = readGrantsAndKey(o, cmd);
  return { dumped, tls, listen, imagesListen, grants };
}

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
  .option('--recover-grace <seconds>', 'how long the keeper waits there before it kills the process', seconds, 30)
  .option('--recover <path>', 'instead of --uffd-socket: take over the migration of a daemon that died (its --recover-at)')
  .addOption(new Option('--page-size <bytes>', 'page size').argParser(pageSize).default(4096))
  .option('--readahead <pages>', 'extra pages fetched with each fault', int, 0)
  .option('--no-push', 'fetch on fault only, no background push')
  .option('--timeout <seconds>', 'how long to wait for the process', seconds, 300)
  .option('--key-file <file>', "the migration's pre-shared key, when the source asks for one")
  .option('--key-id <id>', 'the name of that key', DEFAULT_KEY_ID)
  .option('--resume-timeout <seconds>', 'after a lost connection, keep reconnecting this long before failing', secondsOrNone, 30)
  .option('--reply-timeout <ms>', 'a reply that brings no byte for this long counts as a lost connection', millis, 10_000)
  .option('--tls-cert <file>', 'with a tls:// source: this end\'s certificate (PEM)')
  .option('--tls-key <file>', 'its private key (PEM)')
  .option('--tls-ca <file>', 'the CA that signs the source\'s certificate (PEM)')
  .option('--json', 'print the result as JSON')
  .action(async (o: AttachOptions, cmd: Command) => {
    const log = createLogger('attach');
    const args = checkAttach(o, cmd);
    const options = {
      endpoint: args.endpoint,
      readahead: o.readahead,
      push: o.push,
      key: args.key,
      tls: args.tls,
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

interface AttachOptions {
  connect: string;
  uffdSocket?: string;
  recoverAt?: string;
  recoverGrace: number;
  recover?: string;
  pageSize: number;
  readahead: number;
  push: boolean;
  timeout: number;
  keyFile?: string;
  keyId: string;
  resumeTimeout: number;
  replyTimeout: number;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  json?: boolean;
}

/** Every argument of attach, checked before it listens for a userfaultfd or takes one over. */
function checkAttach(o: AttachOptions, cmd: Command) {
  if (!o.uffdSocket === !o.recover) throw invalid('give exactly one of --uffd-socket and --recover');
  const tls = readTls(o);
  const endpoint = endpointArg('--connect', o.connect, 'connect');
  checkTlsPairing('--connect', endpoint, tls);
  if (o.uffdSocket) {
    socketPathArg('--uffd-socket', o.uffdSocket, 'listen');
    if (statOrNull(o.uffdSocket)) throw invalid(`--uffd-socket ${o.uffdSocket}: something is there already (remove it, or pick another path)`);
  }
  if (o.recover) {
    socketPathArg('--recover', o.recover, 'connect');
    if (!statOf('--recover', o.recover).isSocket()) throw invalid(`--recover ${o.recover}: not a Unix socket (the --recover-at of the daemon that died)`);
  }
  if (o.recoverAt) socketPathArg('--recover-at', o.recoverAt, 'listen');
  else if (given(cmd, 'recoverGrace')) throw invalid('--recover-grace goes with --recover-at');
  const key = readKey(o, cmd);
  return { tls, endpoint, key };
}

function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

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
  .option('--container', 'instead: a runc container moved between two hosts (network namespaces), stock runc lazy migration against postcopy\'s agents, on memproc and redis')
  .option('--memproc-mib <n>', '--criu, --container: memproc size', int, 512)
  .option('--redis-keys <n>', '--criu, --container: redis keys', int, 1_000_000)
  .option('--runs <n>', '--criu, --container: runs per workload and mode', int, 3)
  .option('--workload <list>', '--criu, --container: memproc, redis, redis-zipf (GETs from a Zipf distribution; comma list)', list(String, ['memproc', 'redis', 'redis-zipf']), ['memproc', 'redis'])
  .option('--working-set', '--criu, --container: each postcopy run migrates twice (a container there and back), the second time pushing first what the first recorded')
  .addOption(new Option('--push-priority <p>', "--criu: postcopy's push threads at normal priority, nice 19, or SCHED_IDLE").choices(['normal', 'nice', 'idle']))
  .option('--push-batch <pages>', "--criu: postcopy's pages per background request (migrate's default otherwise)", int)
  .option('--push-window <n>', "--criu: postcopy's background requests in flight", int)
  .option('--checksums', '--criu: postcopy with a CRC32C with every page (migrate checks none over loopback)')
  .option('--warm-up', '--criu: memory warmed before the freeze, in both modes (see migrate --warm-up)')
  .option('--idle-before <seconds>', '--criu: wait this long before each freeze, the workload running (freed memory may go back to the host meanwhile)', int)
  .option('--load <targets>', 'instead: one source serving this many targets at once, each migrating --load-mib through network namespaces', int)
  .option('--load-mib <n>', '--load: MiB per target', int, 64)
  .option('--json', 'print every figure as JSON instead of the tables')
  .option('--plot <file>', 'write a bar chart, FILE.svg or FILE.png')
  .action(async (o: { trials: number; warmup: number; faults: number; pageSize: number[]; transport: BenchTransport[]; link: Link[]; mtu: number[]; placement: Placement; json?: boolean; plot?: string; criu?: boolean; container?: boolean; memprocMib: number; redisKeys: number; runs: number; workload: CriuWorkload[]; workingSet?: boolean; pushPriority?: PushPriority; pushBatch?: number; pushWindow?: number; checksums?: boolean; warmUp?: boolean; idleBefore?: number; load?: number; loadMib: number }) => {
    if (o.workingSet && !o.criu && !o.container) throw invalid('--working-set goes with --criu or --container');
    if (o.pushPriority && !o.criu) throw invalid('--push-priority goes with --criu');
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
    if (o.container) {
      let r: ContainerBenchResult;
      try {
        r = await runContainerBench({ memprocMiB: o.memprocMib, redisKeys: o.redisKeys, runs: o.runs, workloads: o.workload as ContainerWorkload[], workingSet: o.workingSet, onProgress: bar?.update });
      } finally {
        bar?.stop();
      }
      print(!!o.json, r, formatContainerReport(r));
      if (r.runs.some((x) => !x.verified)) process.exitCode = 1;
      return;
    }
    if (o.criu) {
      let r: CriuBenchResult;
      try {
        r = await runCriuBench({ memprocMiB: o.memprocMib, redisKeys: o.redisKeys, runs: o.runs, workloads: o.workload, workingSet: o.workingSet, pushPriority: o.pushPriority, pushBatch: o.pushBatch, pushWindow: o.pushWindow, checksums: o.checksums, warmUp: o.warmUp, idleBefore: o.idleBefore, onProgress: bar?.update });
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

/** The planner's options, the same for rack simulate and plan. */
const plannerOption = {
  classes: () => new Option('--classes <file>', 'host classes, JSON: [{name, threads, memGiB, power: [[threads, watts]...], chassisW, wPerGiB, sleepW, wakeS, wakeJ}] (rack simulate: hosts take the first, every fourth the second)'),
  costs: () => new Option('--costs <file>', 'migration costs, JSON: {allPresentSPerGiB, downtimeS, bytesPerGiB, threadsPerEnd, nicJPerByte}'),
  horizon: () => new Option('--horizon <duration>', 'the planner\'s horizon: a move must pay for itself within it (e.g. 1h, 30m)').argParser(durationOption).default(3600),
  sla: () => new Option('--sla <share>', 'CPU ceiling of a host, a share of its threads').argParser(numberOption).default(0.8),
  maxMoves: (help: string) => new Option('--max-moves <n>', help).argParser(int).default(8),
};

const rack = program.command('rack').description('the energy planner on a rack');

rack
  .command('simulate')
  .description('the planner on a simulated rack, against no migration and a threshold heuristic, on the same load')
  .option('--hosts <n>', 'hosts in the rack', positive, 40)
  .option('--hours <n>', 'hours simulated', numberOption, 24)
  .option('--seed <n>', 'seed of the synthetic load (and of nothing else)', int, 1)
  .option('--trace <file>', 'the load as CSV: time,container,cpu,mem (seconds, an id, busy threads, GiB; mem 0 ends a container)')
  .addOption(plannerOption.classes())
  .addOption(plannerOption.costs())
  .addOption(plannerOption.horizon())
  .addOption(plannerOption.sla())
  .addOption(plannerOption.maxMoves('migrations at most per step (in flight)'))
  .option('--json', 'print {options, strategies, series} as JSON')
  .option('--plot <file>', 'rack power over time, one line per strategy: FILE.svg or FILE.png')
  .action(async (o: PlannerCliOptions & { hosts: number; hours: number; seed: number; trace?: string; json?: boolean; plot?: string }) => {
    if (o.plot) checkPlotFile(o.plot);
    const trace = o.trace ? parseTrace(readArg('--trace', o.trace).toString('utf8')) : undefined;
    const result = simulate({ hosts: o.hosts, hours: o.hours, seed: o.seed, trace, ...plannerArgs(o) });
    if (o.plot) await writeSpec(powerPlotSpec(result), o.plot);
    print(!!o.json, result, formatSimulation(result));
  });

program
  .command('plan')
  .description('the energy planner on a live rack: asks each agent for its host\'s load, and proposes (or with --apply makes) the migrations worth making')
  .requiredOption('--agents <list>', 'the rack\'s agents, HOST[:PORT] comma-separated', (v) => v.split(',').map((x) => x.trim()).filter(Boolean))
  .option('--tls-cert <file>', 'this planner\'s certificate (PEM), for agents on tls://')
  .option('--tls-key <file>', 'its private key (PEM)')
  .option('--tls-ca <file>', 'the rack\'s CA (PEM)')
  .option('--key-file <file>', 'the rack\'s pre-shared key, for agents on tcp://')
  .option('--key-id <id>', 'the name of that key', DEFAULT_KEY_ID)
  .addOption(plannerOption.classes())
  .addOption(plannerOption.costs())
  .addOption(plannerOption.horizon())
  .addOption(plannerOption.sla())
  .addOption(plannerOption.maxMoves('migrations at most'))
  .option('--apply', 'make the moves, through the agents, one after the other')
  .option('--json', 'print {hosts, unreachable, moves, applied} as JSON')
  .action(async (o: PlannerCliOptions & { agents: string[]; tlsCert?: string; tlsKey?: string; tlsCa?: string; keyFile?: string; keyId: string; apply?: boolean; json?: boolean }, cmd: Command) => {
    const tls = readTls(o);
    const key = readKey(o, cmd);
    if (!tls && !key) throw invalid('give --key-file (agents on tcp://) or --tls-cert, --tls-key and --tls-ca (agents on tls://)');
    if (!o.agents.length) throw invalid('--agents: at least one agent');
    for (const a of o.agents) {
      try {
        peerEndpoint(a, tls ? 'tls' : 'tcp');
      } catch (err) {
        throw invalid((err as Error).message);
      }
    }
    const result = await planLive({
      agents: o.agents,
      connect: (to) => connectAgent(to, { name: 'planner', tls, key }),
      ...plannerArgs(o),
      apply: !!o.apply,
      onMove: o.json ? undefined : (m, a) => process.stderr.write(`${m.container}: ${m.from} -> ${m.to}: ${a.ok ? 'moved' : `failed (${a.code})`}\n`),
    });
    print(!!o.json, result, formatLivePlan(result));
    if (result.applied?.some((a) => !a.ok) || result.unreachable.length) process.exitCode = 1;
  });

interface PlannerCliOptions {
  classes?: string;
  costs?: string;
  horizon: number;
  sla: number;
  maxMoves: number;
}

/** The planner's options as plan() takes them: --classes and --costs read and checked. */
function plannerArgs(o: PlannerCliOptions) {
  const classes = o.classes
    ? jsonArg('--classes', o.classes, (v) => {
        if (!Array.isArray(v) || !v.length) throw invalid('--classes: a JSON list of host classes');
        return v.map(checkHostClass);
      })
    : undefined;
  const costs = o.costs ? jsonArg('--costs', o.costs, checkCosts) : undefined;
  return { classes, costs, horizonS: o.horizon, slaCpu: o.sla, maxMoves: o.maxMoves };
}

/** A number (not only a whole one) as an option's value. */
function numberOption(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError('not a number');
  return n;
}

/** A duration: 90, 90s, 30m, 1h, 1.5h; in seconds. */
function durationOption(value: string): number {
  const m = /^(\d+(?:\.\d+)?)(s|m|h)?$/.exec(value.trim());
  if (!m || Number(m[1]) <= 0) throw new InvalidArgumentError('a duration such as 3600, 90s, 30m or 1h');
  return Number(m[1]) * (m[2] === 'h' ? 3600 : m[2] === 'm' ? 60 : 1);
}

/** A JSON file, parsed and checked (check throws ERR_INVALID_ARG naming what is wrong). */
function jsonArg<T>(option: string, path: string, check: (v: unknown) => T): T {
  let v: unknown;
  try {
    v = JSON.parse(readArg(option, path).toString('utf8'));
  } catch (err) {
    if (err instanceof PostcopyError) throw err;
    throw invalid(`${option} ${path}: not JSON (${(err as Error).message})`);
  }
  try {
    return check(v);
  } catch (err) {
    throw invalid(`${option} ${path}: ${(err as Error).message}`);
  }
}

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
  .description("take the place of `criu lazy-pages`, with its arguments: serve the faults of `criu restore --lazy-pages` from CRIU's page server (--page-server), from the images (no --page-server), or from `postcopy serve` (--source postcopy)")
  .option('-D, --images-dir <dir>', 'the dump directory')
  .option('--images <dir>', 'the same as --images-dir')
  .option('-W, --work-dir <dir>', 'where lazy-pages.socket (criu restore connects to it) and the log go (default: the images directory)')
  .option('--page-server [endpoint...]', "the source: CRIU's page server at --address/--port (or tcp://HOST:PORT), or `postcopy serve` with --source postcopy (a process tree: one PID=ENDPOINT per task, PID as the dump names it); none: the pages in the images directory")
  .option('--address <host>', "--page-server: the address of CRIU's page server")
  .option('--port <port>', "--page-server: its port", (v) => portArg('--port', int(v)))
  .addOption(new Option('--source <kind>', "criu: CRIU's page server; postcopy: `postcopy serve` over the frozen task").choices(['criu', 'postcopy']).default('criu'))
  .option('--tls', "TLS to CRIU's page server (CRIU's certificate paths unless given)")
  .option('--tls-cacert <file>', 'the CA certificate', '/etc/pki/CA/cacert.pem')
  .option('--tls-cert <file>', "this daemon's certificate", '/etc/pki/criu/cert.pem')
  .option('--tls-key <file>', 'its private key', '/etc/pki/criu/private/key.pem')
  .option('--tls-cacrl <file>', 'a certificate revocation list (not checked: refused if given)')
  .option('--tls-no-cn-verify', "do not check the page server's name against its certificate (never checked here: its certificate must be signed by the CA)")
  .option('--no-default-config', "CRIU's: do not read /etc/criu/default.conf (this daemon reads no configuration file)")
  .option('-o, --log-file <file>', 'the log (relative to the work directory), instead of stderr')
  .option('-v, --verbosity [level]', "CRIU's log levels: 0 errors only ... 4 debug; -v, -vv ... count", '2')
  .option('--status-fd <fd>', 'write one zero byte to this fd once criu restore may start, then close it', int)
  .option('--images-from <endpoint>', 'fetch the images first, from `postcopy serve --images-listen`')
  .option('--pidfile <path>', "the restored task's pid file (`criu restore --pidfile`); without it the tasks are found under criu restore")
  .option('--no-push', 'fetch on fault only, no background push')
  .option('--push-batch <pages>', 'pages per background request', positive)
  .option('--push-window <n>', 'background requests in flight', positive)
  .option('--no-checksums', 'ask a postcopy source for no CRC32C with each page (both ends on one kernel)')
  .option('--timeout <seconds>', 'how long to wait for criu restore', seconds, 300)
  .option('--key-file <file>', "the migration's pre-shared key (--source postcopy), when the source asks for one")
  .option('--key-id <id>', 'the name of that key', DEFAULT_KEY_ID)
  .option('--json', 'JSON lines on stdout')
  .action(async (o: LazyPagesOptions, cmd: Command) => {
    const args = checkLazyPages(o, cmd);
    const log = args.logFile ? createLogger('lazy-pages', args.level, args.logFile) : createLogger('lazy-pages', args.level);
    try {
      if (args.imagesFrom) {
        const names = await fetchImages(args.imagesFrom, args.imagesDir, o.timeout * 1000);
        printEvent(!!o.json, 'lazy-pages', 'images', { files: names.length }, `fetched ${names.length} image files into ${args.imagesDir}`);
      }
      const rootPid = () => {
        try {
          return o.pidfile ? Number(readFileSync(o.pidfile, 'utf8').trim()) || undefined : undefined;
        } catch {
          return undefined;
        }
      };
      const result = await serveLazyPages({
        imagesDir: args.imagesDir,
        workDir: args.workDir,
        source: args.source,
        push: o.push,
        pushBatch: o.pushBatch,
        pushWindow: o.pushWindow,
        checksums: o.checksums,
        // A task of the restored tree, by the pid the dump gives it (found under criu restore otherwise).
        targetPid: o.pidfile ? treeMember(rootPid) : undefined,
        timeoutMs: o.timeout * 1000,
        key: args.key,
        logger: log,
        onListening: () => {
          if (o.statusFd !== undefined) signalStatusFd(o.statusFd);
          printEvent(!!o.json, 'lazy-pages', 'listening', { socket: join(args.workDir, LAZY_PAGES_SOCKET) }, `waiting for criu restore on ${join(args.workDir, LAZY_PAGES_SOCKET)}`);
        },
      });
      const lines = result.tasks.map(({ pid, report: r }) => `task ${pid}: ${r.pages} pages, ${r.faulted} faulted, ${r.pushed} pushed, ${r.zero} zero, fault p50 ${((r.latency?.p50Ns ?? 0) / 1000).toFixed(1)} us`);
      log.info({ tasks: result.tasks.length, ms: result.ms }, 'every task is done');
      const missing = result.tasks.reduce((n, { report: r }) => n + Math.max(0, r.pages - r.present), 0);
      const end = missing ? `every task done ${result.ms} ms after the restore connected (${missing} pages never asked for)` : `every page present ${result.ms} ms after the restore connected`;
      printEvent(!!o.json, 'lazy-pages', 'done', result, [...lines, end].join('\n'));
    } catch (err) {
      log.error({ code: (err as PostcopyError).code }, `Error: ${(err as Error).message}`); // zdtm and CRIU's users grep the log for "Error"
      throw err;
    } finally {
      log.flush();
    }
  });

interface LazyPagesOptions {
  imagesDir?: string;
  images?: string;
  workDir?: string;
  pageServer?: true | string[];
  address?: string;
  port?: number;
  source: 'criu' | 'postcopy';
  tls?: boolean;
  tlsCacert: string;
  tlsCert: string;
  tlsKey: string;
  tlsCacrl?: string;
  tlsNoCnVerify?: boolean;
  logFile?: string;
  verbosity: string | true;
  statusFd?: number;
  imagesFrom?: string;
  pidfile?: string;
  push: boolean;
  pushBatch?: number;
  pushWindow?: number;
  checksums: boolean;
  timeout: number;
  keyFile?: string;
  keyId: string;
  json?: boolean;
}

/** CRIU's verbosity (-v4, -vvv, --verbosity=3; 2 by default) as a log level. */
function logLevel(v: string | true): string {
  const n = v === true ? 3 : /^v*$/.test(v) ? 3 + v.length : /^[0-4]$/.test(v) ? Number(v) : NaN;
  if (Number.isNaN(n)) throw invalid(`--verbosity ${v}: a level 0 to 4, or -v, -vv ...`);
  return ['fatal', 'error', 'warn', 'info', 'debug'][Math.min(n, 4)];
}

/** --status-fd: one zero byte, as CRIU writes it when it is ready, then the fd is closed. */
function signalStatusFd(fd: number): void {
  const n = native.writeAll(fd, Buffer.alloc(1), 0, 1);
  native.close(fd);
  if (n !== 1) throw new PostcopyError('ERR_INVALID_ARG', `--status-fd ${fd}: cannot write to it (errno ${-n})`);
}

/** Every argument of lazy-pages, checked before it fetches images or listens for criu restore. */
function checkLazyPages(o: LazyPagesOptions, cmd: Command) {
  if (o.images && o.imagesDir && o.images !== o.imagesDir) throw invalid('give the images directory once: --images-dir (-D) or --images');
  const imagesDir = o.imagesDir ?? o.images;
  if (!imagesDir) throw invalid('the images directory: -D/--images-dir DIR');
  if (o.imagesFrom) {
    // fetched into it (made if missing)
    if (statOrNull(imagesDir) && !statOf('--images-dir', imagesDir).isDirectory()) throw invalid(`--images-dir ${imagesDir}: not a directory`);
  } else dirArg('--images-dir', imagesDir);
  const workDir = o.workDir ? dirArg('--work-dir', o.workDir) : imagesDir;
  const level = logLevel(o.verbosity);
  const logFile = o.logFile === undefined ? undefined : o.logFile.startsWith('/') ? o.logFile : join(workDir, o.logFile);
  if (logFile) dirArg('--log-file', dirname(logFile));
  if (o.statusFd !== undefined) {
    try {
      fstatSync(o.statusFd);
    } catch {
      throw invalid(`--status-fd ${o.statusFd}: not an open fd`);
    }
  }
  const imagesFrom = o.imagesFrom ? endpointArg('--images-from', o.imagesFrom, 'connect', ['tcp', 'unix']) : null;
  const source = lazySource(o);
  try {
    checkPushSettings(o);
  } catch (err) {
    throw invalid(`--push-batch, --push-window: ${(err as Error).message}`);
  }
  if (o.source === 'criu' && o.keyFile) throw invalid("--key-file goes with --source postcopy (CRIU's page server asks for no key)");
  const key = readKey(o, cmd);
  return { imagesDir, workDir, level, logFile, imagesFrom, source, key };
}

/** Where lazy-pages takes its pages from, in CRIU's words (--page-server --address --port) or ours. */
function lazySource(o: LazyPagesOptions): LazyPagesSource {
  const values = Array.isArray(o.pageServer) ? o.pageServer : [];
  const criuStyle = o.address !== undefined || o.port !== undefined;
  if (!o.pageServer) {
    if (criuStyle) throw invalid('--address and --port go with --page-server');
    if (o.source === 'postcopy') throw invalid('--source postcopy: give --page-server ENDPOINT');
    if (o.tls) throw invalid('--tls goes with --page-server');
    return { kind: 'images' };
  }
  if (values.length && criuStyle) throw invalid('give the page server once: --page-server ENDPOINT, or --page-server --address A --port P');
  if (o.tlsCacrl) throw invalid('--tls-cacrl: revocation lists are not checked here');
  if (o.source === 'postcopy') {
    if (!values.length) throw invalid('--source postcopy: give --page-server ENDPOINT (or PID=ENDPOINT per task)');
    if (o.tls) throw invalid('--tls goes with CRIU\'s page server (a postcopy source: tls:// with --tls-cert, --tls-key and --tls-ca of serve)');
    return { kind: 'postcopy', endpoint: sourceEndpoints(values) };
  }
  let endpoint: Endpoint;
  if (values.length) {
    if (values.length !== 1 || /^\d+=/.test(values[0])) throw invalid("--page-server: CRIU's page server is one endpoint, it serves every task of the dump");
    endpoint = endpointArg('--page-server', values[0], 'connect', ['tcp']);
  } else {
    if (o.port === undefined) throw invalid("--page-server: CRIU's page server needs --port (and --address, 127.0.0.1 by default)");
    endpoint = { kind: 'tcp', host: o.address ?? '127.0.0.1', port: o.port };
  }
  if (!o.tls) return { kind: 'criu', endpoint };
  const read = (option: string, file: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw invalid(`${option} ${file}: ${(err as Error).message}`);
    }
  };
  return { kind: 'criu', endpoint, tls: { ca: read('--tls-cacert', o.tlsCacert), cert: read('--tls-cert', o.tlsCert), key: read('--tls-key', o.tlsKey) } };
}

program
  .command('migrate')
  .description('post-copy migration of a process with stock CRIU: CRIU moves the state, postcopy the memory; --to moves it to another host')
  .option('--pid <pid>', 'the task, running in the CRIU root (see `postcopy criu-setup`)')
  .option('--container <id>', 'with --to: a runc container of this host (its runc root: --runc-root, default the agent\'s)')
  .option('--runc-root <dir>', 'with --container: the runc root it lives in, a path inside the CRIU root')
  .option('--copy-bundle', 'with --container: send its bundle to the destination (copied while it runs, what changed sent again in the downtime); by default the bundle must be there already')
  .option('--to <host>', "another host's agent, HOST[:PORT] (port 7070 by default): this host's agent moves the task there")
  .option('--state-dir <dir>', "with --to: this host's agent's state directory (its socket agent.sock is in it)", '/var/lib/postcopy')
  .addOption(new Option('--mode <mode>', "postcopy, or stock (CRIU's own lazy-pages, the baseline)").choices(['postcopy', 'stock']).default('postcopy'))
  .option('--work-dir <dir>', 'images and logs, an absolute path inside the CRIU root')
  .option('--criu-port <port>', "port of CRIU's page server on loopback", '27001')
  .option('--netns', 'run the source and the target in two network namespaces joined by a veth pair')
  .option('--checksums', 'a CRC32C with every page (default: only with --netns or --to; over loopback the kernel is all that carries them)')
  .option('--no-checksums', 'no CRC32C with the pages, with --netns or --to too')
  .option('--warm-up', 'write and free as much memory as the tasks hold just before the freeze (on a VM that hands free pages back to its host)')
  .option('--working-set <file>', 'push first the pages this file says the tasks touched first at an earlier migration, then record this one\'s there (created if missing)')
  .option('--timeout <seconds>', 'how long each step may take', seconds, 120)
  .option('--json', 'print the result as JSON')
  .action(async (o: MigrateCliOptions, cmd: Command) => {
    let migrating = false;
    try {
      // Checked before the CRIU root is set up or the task frozen.
      if ((o.pid === undefined) === (o.container === undefined)) throw invalid('give exactly one of --pid and --container');
      if (o.container !== undefined && o.to === undefined) throw invalid('--container goes with --to (a container moves to another host)');
      if (o.runcRoot !== undefined && o.container === undefined) throw invalid('--runc-root goes with --container');
      if (o.copyBundle && o.container === undefined) throw invalid('--copy-bundle goes with --container');
      const pid = o.pid === undefined ? undefined : pidArg('--pid', numberArg('--pid', o.pid));
      if (o.to !== undefined) {
        try {
          if (o.container !== undefined) checkContainerId(o.container);
          if (o.runcRoot !== undefined) checkPathInRoot('--runc-root', o.runcRoot);
        } catch (err) {
          throw invalid((err as Error).message);
        }
        if (o.workingSet !== undefined) throw invalid('--working-set does not go with --to yet: it is kept by the local migration (see docs/benchmarks.md, issue 17)');
        for (const [flag, name] of [['--mode', 'mode'], ['--work-dir', 'workDir'], ['--criu-port', 'criuPort'], ['--netns', 'netns'], ['--warm-up', 'warmUp']] as const)
          if (given(cmd, name)) throw invalid(`${flag} does not go with --to: the agents choose their own (postcopy mode, work directories, ports)`);
        try {
          peerEndpoint(o.to, 'tcp');
        } catch (err) {
          throw invalid((err as Error).message);
        }
        const socket = join(dirArg('--state-dir', o.stateDir), AGENT_SOCKET);
        migrating = true;
        // On a TTY, a bar of the migration's steps; elsewhere, a line per step.
        const bar = o.json ? null : stepBar('migrate');
        const steps = ['connected', 'destination ready', 'frozen', 'dumped', 'images sent', 'restored', 'all pages present', 'released'];
        let done = 0;
        const onPhase = o.json ? undefined : bar ? (p: string, ms: number) => bar.update(Math.min(++done, steps.length), steps.length, `${p} (${ms} ms)`) : (p: string, ms: number) => process.stderr.write(`${String(ms).padStart(8)} ms  ${p}\n`);
        let result: Awaited<ReturnType<typeof migrateThroughAgent>>;
        try {
          result = await migrateThroughAgent(socket, { ...(pid !== undefined ? { pid } : { container: o.container, runcRoot: o.runcRoot, ...(o.copyBundle ? { copyBundle: true } : {}) }), to: o.to, checksums: given(cmd, 'checksums') ? o.checksums : undefined, timeoutMs: o.timeout * 1000 }, onPhase);
        } finally {
          bar?.stop();
        }
        print(!!o.json, { ok: true, ...result }, `migrated ${pid ?? `container ${o.container}`} to ${o.to} (pid ${result.restoredPid} there): downtime ${result.downtime_ms} ms, every page present after ${result.all_present_ms} ms`);
        return;
      }
      if (given(cmd, 'stateDir')) throw invalid('--state-dir goes with --to');
      const criuPort = portArg('--criu-port', numberArg('--criu-port', o.criuPort));
      const workDir = workDirArg(o.workDir ?? `/var/lib/postcopy/migrate-${pid}`);
      if (pid === undefined) throw invalid('give --pid');
      if (o.workingSet !== undefined && (o.mode !== 'postcopy' || o.netns)) throw invalid('--working-set goes with postcopy mode in one namespace (not --mode stock, not --netns)');
      const workingSet = o.workingSet === undefined ? null : readWorkingSetFile(o.workingSet);
      let recorded: WorkingSet | null = null;
      ensureCriuRoot();
      migrating = true;
      const result = await withPipeSize(() =>
        migrate({
          pid, mode: o.mode, workDir, criuPort, netns: o.netns, checksums: o.checksums, warmUp: o.warmUp, timeoutMs: o.timeout * 1000, logger: createLogger('migrate'),
          workingSet: workingSet ?? undefined,
          onWorkingSet: o.workingSet === undefined ? undefined : (ws) => (recorded = ws),
          onPhase: o.json ? undefined : (p, ms) => process.stderr.write(`${String(ms).padStart(6)} ms  ${p}\n`),
        }),
      );
      // The task runs on the target now: a record that cannot be written is a warning, not a failure.
      if (recorded && o.workingSet !== undefined) {
        try {
          writeWorkingSetFile(o.workingSet, mergeWorkingSets(workingSet, recorded));
        } catch (err) {
          process.stderr.write(`warning: the working set was not written to ${o.workingSet}: ${(err as Error).message}\n`);
        }
      }
      print(!!o.json, { ok: true, ...result }, `migrated ${pid} -> ${result.restoredPid}: downtime ${result.downtime_ms} ms, every page present after ${result.all_present_ms} ms`);
    } catch (err) {
      throw migrateFailure(err, migrating, !!o.json);
    }
  });

interface MigrateCliOptions {
  pid?: string;
  container?: string;
  runcRoot?: string;
  copyBundle?: boolean;
  to?: string;
  stateDir: string;
  mode: MigrateMode;
  workDir?: string;
  criuPort: string;
  netns?: boolean;
  checksums?: boolean;
  warmUp?: boolean;
  workingSet?: string;
  timeout: number;
  json?: boolean;
}

program
  .command('agent')
  .description('run the migration agent of this host: the source or the destination of migrations between hosts')
  .requiredOption('--listen <endpoint>', 'the agents\' port: tls://HOST:PORT (mutual certificates) or tcp://HOST:PORT (with --key-file)')
  .option('--tls-cert <file>', "this agent's certificate (PEM)")
  .option('--tls-key <file>', 'its private key (PEM)')
  .option('--tls-ca <file>', "the CA that signs the other agents' certificates (PEM)")
  .option('--key-file <file>', 'a pre-shared key every agent of the rack holds (hex text or raw bytes, at least 16): for tcp://')
  .option('--key-id <id>', 'the name of that key', DEFAULT_KEY_ID)
  .option('--state-dir <dir>', 'its state: agent.sock (for `postcopy migrate --to`), ledger.jsonl', '/var/lib/postcopy')
  .option('--metrics-listen <endpoint>', 'plain HTTP, tcp://HOST:PORT: GET /metrics (Prometheus) and GET /status (JSON)')
  .option('--name <name>', "this host's name in the status, the logs and the ledger (default: the host name)")
  .option('--runc-root <dir>', 'where runc keeps this host\'s containers, a path inside the CRIU root (default: /var/lib/postcopy-agent/NAME/runc)')
  .option('--class <name>', 'this host\'s class in the energy model (docs/energy.md), told to `postcopy plan`', 'xeon-d-m510')
  .option('--powercap <dir>', "where RAPL's energy counters are: /metrics reports the host's measured power from them (default /sys/class/powercap; without them, the class's model)")
  .option('--json', 'JSON lines on stdout')
  .action(async (o: AgentCliOptions, cmd: Command) => {
    const tls = readTls(o);
    const listen = endpointArg('--listen', o.listen, 'listen', ['tcp', 'tls']);
    checkTlsPairing('--listen', listen, tls);
    const key = readKey(o, cmd);
    if (listen.kind === 'tcp' && !key) throw invalid('--listen tcp://: give --key-file (a pre-shared key), or listen on tls:// with certificates');
    const metricsListen = o.metricsListen ? endpointArg('--metrics-listen', o.metricsListen, 'listen', ['tcp']) : undefined;
    if (o.name !== undefined && !isName(o.name)) throw invalid(`--name ${JSON.stringify(o.name)}: 1 to 64 letters, digits, '.', '_' or '-'`);
    if (!isName(o.class)) throw invalid(`--class ${JSON.stringify(o.class)}: a host class name`);
    if (statOrNull(o.stateDir) && !statOf('--state-dir', o.stateDir).isDirectory()) throw invalid(`--state-dir ${o.stateDir}: not a directory`);
    socketPathArg('--state-dir', join(o.stateDir, AGENT_SOCKET), 'connect');
    ensureCriuRoot();
    if (o.runcRoot !== undefined) {
      try {
        checkPathInRoot('--runc-root', o.runcRoot);
      } catch (err) {
        throw invalid((err as Error).message);
      }
    }
    const agent = await Agent.start({ listen, tls, keys: key ? [key] : [], stateDir: o.stateDir, metricsListen, name: o.name, runcRoot: o.runcRoot, hostClass: o.class, powercap: o.powercap, logger: createLogger('agent', process.env.POSTCOPY_LOG ?? 'info') });
    printEvent(!!o.json, 'agent', 'listening', { agent: agent.name, endpoint: formatEndpoint(agent.endpoint), socket: agent.socketPath, ...(agent.metricsEndpoint ? { metrics: formatEndpoint(agent.metricsEndpoint) } : {}) }, `agent ${agent.name} listening on ${formatEndpoint(agent.endpoint)}${agent.metricsEndpoint ? `, metrics on http://${(agent.metricsEndpoint as { host: string }).host}:${(agent.metricsEndpoint as { port: number }).port}/metrics` : ''}`);
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await agent.close();
    printEvent(!!o.json, 'agent', 'stopped', {}, 'agent stopped');
  });

interface AgentCliOptions {
  listen: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  keyFile?: string;
  keyId: string;
  stateDir: string;
  metricsListen?: string;
  name?: string;
  runcRoot?: string;
  class: string;
  powercap?: string;
  json?: boolean;
}

type Running = 'original' | 'restored' | 'none';

const RUNNING: Record<Running, string> = {
  original: 'the original task runs (it was not migrated)',
  restored: 'the restored task runs',
  none: 'neither the original nor the restored task runs',
};

/**
 * A failed migrate, said so that its caller knows which copy of the task runs now: migrate() says
 * it in the error's `running` (and may add a `report`); a failure before migrate() was called left
 * the original alone. With --json, also one line {ok: false, code, message, running, report?} on stdout.
 */
function migrateFailure(err: unknown, migrating: boolean, json: boolean): PostcopyError {
  const e = err as Partial<PostcopyError> & { running?: Running; report?: object };
  const code = typeof e.code === 'string' && e.code.startsWith('ERR_') ? e.code : 'ERR_CRIU';
  const message = e.message ?? String(err);
  const running = e.running ?? (migrating ? undefined : 'original');
  if (json) print(true, { ok: false, code, message, running: running ?? null, ...(e.report !== undefined ? { report: e.report } : {}) }, '');
  const failure = new PostcopyError(code, `${message}; ${running ? RUNNING[running] : 'which copy of the task runs is not known'}`, { cause: err });
  return Object.assign(failure, { running, report: e.report });
}

/** A whole number given as text (options checked in the action rather than by commander). */
function numberArg(option: string, text: string): number {
  try {
    return int(text);
  } catch (err) {
    throw invalid(`${option} ${text}: ${(err as Error).message}`);
  }
}

/** migrate's --work-dir: an absolute path inside the CRIU root, spelt plainly (CRIU's shell commands use it). */
function workDirArg(path: string): string {
  if (!/^\/[A-Za-z0-9._/-]*$/.test(path) || path.split('/').includes('..'))
    throw invalid(`--work-dir ${path}: an absolute path of letters, digits, '.', '_', '-' and '/', without '..'`);
  return path;
}

program
  .command('doctor')
  .description('report userfaultfd, privileges, kernel features and CRIU')
  .option('--json', 'print as JSON')
  .action((o: { json?: boolean }) => {
    const c = probeCapabilities();
    const mark = (ok: boolean) => (ok ? 'ok  ' : 'MISSING');
    const text: string[] = [
      `kernel          ${c.kernel}`,
      `root            ${c.root ? 'yes' : 'no'}`,
      `userfaultfd     ${mark(c.uffd.ok)} ${c.uffd.detail}${c.uffd.features ? ` (features: ${c.uffd.features.join(', ')})` : ''}`,
      `process memory  ${mark(c.processVmReadv.ok)} ${c.processVmReadv.detail}`,
      `netns/veth      ${mark(c.netns.ok)} ${c.netns.detail}`,
      `criu            ${mark(c.criu.ok)} ${c.criu.detail}`,
    ];
    // Which criu and runc migrations use, and why (the host's own, or the managed root).
    const host = probeHostTools();
    const choice = toolChoice();
    const tools = {
      host: host,
      using: choice.root === '/' ? 'host' : 'root',
      root: choice.root,
      reason: choice.reason,
      inet: inetNote(c.kernel, choice.root === '/' ? host.criuVersion : rootCriuVersion(c.criu.detail)),
    };
    text.push(
      `host criu       ${host.criuVersion ? `${host.criuVersion} (criu check: ${host.criuCheck ?? 'no answer'})` : 'none'}`,
      `host runc       ${host.runcVersion ?? 'none'}`,
      `using           ${choice.root === '/' ? "the host's criu and runc" : `criu and runc in ${choice.root}`}: ${choice.reason}`,
      ...(tools.inet ? [`INET sockets    ${tools.inet}`] : []),
    );
    print(!!o.json, { ...c, tools }, text.join('\n'));
  });

/** criu's version from the root's status line ("criu 4.1.1 in ..."). */
const rootCriuVersion = (detail: string) => /criu (\d+\.\d+(?:\.\d+)?)/.exec(detail)?.[1] ?? null;

/**
 * `--page-server` values: one endpoint, or PID=ENDPOINT for each task of a tree, every one checked
 * now (CRIU's page server listens on TCP; lazy-pages has no TLS options).
 */
function sourceEndpoints(values: string[]): Endpoint | ((pid: number) => Endpoint) {
  const kinds: Endpoint['kind'][] = ['tcp', 'unix'];
  if (values.length === 1 && !/^\d+=/.test(values[0])) return endpointArg('--page-server', values[0], 'connect', kinds);
  const byPid = new Map<number, Endpoint>();
  for (const v of values) {
    const m = /^(\d+)=(.+)$/.exec(v);
    if (!m) throw invalid(`--page-server ${v}: several sources are given as PID=ENDPOINT, one per task`);
    const pid = Number(m[1]);
    if (!Number.isSafeInteger(pid) || pid < 1) throw invalid(`--page-server ${v}: no task has pid ${m[1]}`);
    if (byPid.has(pid)) throw invalid(`--page-server ${v}: task ${pid} has a source already`);
    byPid.set(pid, endpointArg(`--page-server ${pid}=`, m[2], 'connect', kinds));
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
    // A usage error commander caught: it has said so already (outputError above); --help: exit 0.
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    const e = err as PostcopyError;
    process.stderr.write(`postcopy: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
    process.exitCode = e.code === 'ERR_PRIVILEGE' ? 77 : 1;
  }
}

await main(process.argv);
