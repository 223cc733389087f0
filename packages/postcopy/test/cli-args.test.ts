// The CLI checks every argument before it freezes a process or takes anything, and a serve ends
// only once every target it serves is done, fork children and resumed connections included
// (issue 15). Real CLI runs against real processes; real connections to a real page server.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { newNonce, proof, targetHelloAuth, type PresharedKey } from '../src/protocol/auth.js';
import { encodeAuth, encodeBye, encodeGet, encodeHello } from '../src/protocol/codec.js';
import { FrameDecoder } from '../src/protocol/decoder.js';
import { ByeReason, Feature, FrameType, PROTOCOL_VERSION, Role, type Frame } from '../src/protocol/frames.js';
import { ImageFileSource } from '../src/source/image-file.js';
import { PageServer, type ConnectionEnd, type ServerEngine } from '../src/source/server.js';
import { TcpTransport } from '../src/transport/index.js';
import { makeCerts, type TestCerts } from './helpers/certs.js';
import { CLI, jsonLines, makeImage, spawnTs } from './helpers/util.js';

const PS = 4096;
const CRIU_FIXTURE = fileURLToPath(new URL('./fixtures/criu-memproc', import.meta.url));
/** Longest a CLI run may take here: a bad argument is refused at once. */
const RUN_LIMIT_MS = 30_000;

/** The third field of /proc/PID/stat ('T': stopped), or null once the process is gone. */
function procState(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2);
  } catch {
    return null;
  }
}

/** A live process for the CLI to be pointed at; killed by its test (after a failure too). */
function victim(): ChildProcess & { pid: number } {
  const child = spawn('sleep', ['600'], { stdio: 'ignore' });
  if (!child.pid) throw new Error('cannot start sleep');
  return child as ChildProcess & { pid: number };
}

function kill(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

interface CliRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs the CLI to its end, killed if it runs past RUN_LIMIT_MS. */
function runCli(args: string[]): Promise<CliRun> {
  const child = spawnTs(CLI, args);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, RUN_LIMIT_MS);
  return new Promise((resolve) =>
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, timedOut });
    }),
  );
}

/** Runs fn over items, at most `width` at a time. */
async function inBatches<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += width) await Promise.all(items.slice(i, i + width).map(fn));
}

interface BadCase {
  /** what is wrong */
  what: string;
  /** the CLI's arguments, for a process pid and a fresh directory of this case's own */
  args: (pid: number, dir: string) => string[];
  code: string;
  /** more checks once the CLI has exited: a message, or null when all is well */
  check?: (run: CliRun, dir: string) => string | null;
}

/**
 * Runs every case against a fresh `sleep` each: the CLI must exit non-zero with the code on stderr,
 * and leave the process running, neither stopped nor killed. Every failure is reported at once.
 */
async function refusesAll(cases: readonly BadCase[], root: string): Promise<void> {
  const failures: string[] = [];
  await inBatches(cases.map((c, i) => ({ c, i })), 6, async ({ c, i }) => {
    const v = victim();
    const dir = join(root, `case-${i}`);
    mkdirSync(dir, { recursive: true });
    try {
      const args = c.args(v.pid, dir);
      const run = await runCli(args);
      const state = procState(v.pid);
      const problems = [
        run.timedOut ? `still running after ${RUN_LIMIT_MS} ms` : null,
        run.status === 0 ? 'exit status 0' : null,
        run.stderr.includes(c.code) ? null : `no ${c.code} on stderr`,
        state === 'T' || state === 't' ? 'left the process stopped' : null,
        state === null || state === 'Z' ? 'the process is gone' : null,
        c.check?.(run, dir) ?? null,
      ].filter((p) => p !== null);
      if (problems.length) failures.push(`${c.what} (${args.join(' ')}): ${problems.join('; ')}; stderr: ${run.stderr.trim().split('\n')[0]}`);
    } finally {
      kill(v);
    }
  });
  assert.deepEqual(failures, [], `\n${failures.join('\n')}`);
}

/** The same extra check for each case. */
const withCheck = (check: BadCase['check'], cases: BadCase[]): BadCase[] => cases.map((c) => ({ ...c, check }));

describe('postcopy CLI: bad arguments are refused before anything is frozen or taken', () => {
  let root: string;
  let certs: TestCerts;
  let taken: Server;
  let takenPort: number;
  const f = (name: string) => join(root, name);
  /** a pid no process has: above pid_max */
  let noSuchPid: number;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'pc-cli-args-'));
    makeImage(f('img'), 16 * PS);
    writeFileSync(f('empty'), '');
    writeFileSync(f('key'), randomBytes(32).toString('hex'));
    writeFileSync(f('short-key'), 'too short'); // read as raw bytes: 9 of them
    writeFileSync(f('garbage.pem'), 'not a certificate\n');
    const grant = (keyId: string, bytes = 32) => ({ keyId, key: randomBytes(bytes).toString('hex') });
    writeFileSync(f('grants-not-json'), '[{"keyId":');
    writeFileSync(f('grants-not-array'), JSON.stringify(grant('a')));
    writeFileSync(f('grants-twice'), JSON.stringify([grant('a'), grant('a')]));
    writeFileSync(f('grants-short'), JSON.stringify([grant('a', 8)]));
    writeFileSync(f('grants-bad-regions'), JSON.stringify([{ ...grant('a'), regions: [{ region: -1 }] }]));
    writeFileSync(f('grants-postcopy'), JSON.stringify([grant('postcopy'), grant('b')]));
    mkdirSync(f('nodump'));
    cpSync(CRIU_FIXTURE, f('dump'), { recursive: true });
    certs = makeCerts();
    noSuchPid = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1;
    taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    takenPort = (taken.address() as { port: number }).port;
  });
  after(async () => {
    await new Promise((r) => taken?.close(r));
    rmSync(root, { recursive: true, force: true });
    if (certs) rmSync(certs.dir, { recursive: true, force: true });
  });

  const tls = (who: 'source' | 'target') => ['--tls-cert', certs.files(who).cert, '--tls-key', certs.files(who).key, '--tls-ca', certs.files(who).ca];

  it('serve refuses each bad argument, and never leaves the process it was to serve stopped', async () => {
    const serve = (pid: number, ...more: string[]) => ['serve', '--pid', String(pid), '--listen', 'tcp://127.0.0.1:0', ...more];
    const cases: BadCase[] = [
      { what: 'a port above 65535', args: (p) => ['serve', '--pid', String(p), '--listen', 'tcp://127.0.0.1:99999'], code: 'ERR_INVALID_ARG' },
      { what: 'an unknown scheme', args: (p) => ['serve', '--pid', String(p), '--listen', 'bogus://x'], code: 'ERR_INVALID_ARG' },
      { what: 'a Unix socket in no directory', args: (p) => ['serve', '--pid', String(p), '--listen', 'unix:/nonexistent-dir/pc.sock'], code: 'ERR_INVALID_ARG' },
      {
        what: 'a Unix socket path where a file is',
        args: (p, d) => (writeFileSync(join(d, 'precious'), 'keep me'), ['serve', '--pid', String(p), '--listen', `unix:${join(d, 'precious')}`]),
        code: 'ERR_INVALID_ARG',
        check: (_, d) => (existsSync(join(d, 'precious')) ? null : 'it removed the file'),
      },
      { what: 'a Unix socket path too long', args: (p) => ['serve', '--pid', String(p), '--listen', `unix:/tmp/${'x'.repeat(120)}`], code: 'ERR_INVALID_ARG' },
      { what: 'tls:// without certificates', args: (p) => ['serve', '--pid', String(p), '--listen', 'tls://127.0.0.1:0'], code: 'ERR_INVALID_ARG' },
      { what: 'certificates without tls://', args: (p) => serve(p, ...tls('source')), code: 'ERR_INVALID_ARG' },
      { what: '--tls-cert alone', args: (p) => ['serve', '--pid', String(p), '--listen', 'tls://127.0.0.1:0', '--tls-cert', certs.files('source').cert], code: 'ERR_INVALID_ARG' },
      { what: 'a TLS file that is not there', args: (p) => ['serve', '--pid', String(p), '--listen', 'tls://127.0.0.1:0', ...tls('source').map((a) => (a.endsWith('.key') ? f('nothing.key') : a))], code: 'ERR_INVALID_ARG' },
      { what: 'a certificate that is not PEM', args: (p) => ['serve', '--pid', String(p), '--listen', 'tls://127.0.0.1:0', ...tls('source').map((a) => (a === certs.files('source').cert ? f('garbage.pem') : a))], code: 'ERR_INVALID_ARG' },
      { what: 'a key file that is not there', args: (p) => serve(p, '--key-file', f('nothing')), code: 'ERR_INVALID_ARG' },
      { what: 'a key too short', args: (p) => serve(p, '--key-file', f('short-key')), code: 'ERR_INVALID_ARG' },
      { what: 'an empty key id', args: (p) => serve(p, '--key-file', f('key'), '--key-id', ''), code: 'ERR_INVALID_ARG' },
      { what: '--key-id without --key-file', args: (p) => serve(p, '--key-id', 'k'), code: 'ERR_INVALID_ARG' },
      { what: 'a grants file that is not there', args: (p) => serve(p, '--grants', f('nothing')), code: 'ERR_INVALID_ARG' },
      { what: 'grants that are not JSON', args: (p) => serve(p, '--grants', f('grants-not-json')), code: 'ERR_INVALID_ARG' },
      { what: 'grants that are not an array', args: (p) => serve(p, '--grants', f('grants-not-array')), code: 'ERR_INVALID_ARG' },
      { what: 'a key id granted twice', args: (p) => serve(p, '--grants', f('grants-twice')), code: 'ERR_INVALID_ARG' },
      { what: 'a granted key too short', args: (p) => serve(p, '--grants', f('grants-short')), code: 'ERR_INVALID_ARG' },
      { what: 'granted regions that are not regions', args: (p) => serve(p, '--grants', f('grants-bad-regions')), code: 'ERR_INVALID_ARG' },
      { what: 'a key id in --key-file and --grants', args: (p) => serve(p, '--key-file', f('key'), '--grants', f('grants-postcopy')), code: 'ERR_INVALID_ARG' },
      { what: '--images without --images-listen', args: (p) => serve(p, '--images', f('dump')), code: 'ERR_INVALID_ARG' },
      { what: '--images-listen without --images', args: (p) => serve(p, '--images-listen', 'tcp://127.0.0.1:0'), code: 'ERR_INVALID_ARG' },
      { what: 'an images directory that is not there', args: (p) => serve(p, '--images', f('nothing'), '--images-listen', 'tcp://127.0.0.1:0'), code: 'ERR_INVALID_ARG' },
      { what: 'a bad --images-listen', args: (p) => serve(p, '--images', f('dump'), '--images-listen', 'tcp://127.0.0.1:70000'), code: 'ERR_INVALID_ARG' },
      { what: 'a range not page-aligned', args: (p) => serve(p, '--range', '4097:4096'), code: 'ERR_PAGE_SIZE' },
      { what: 'an empty range', args: (p) => serve(p, '--range', '4096:0'), code: 'ERR_PAGE_SIZE' },
      { what: 'a range outside every mapping', args: (p) => serve(p, '--range', '4096:4096'), code: 'ERR_OUT_OF_RANGE' },
      { what: 'a range that is not START:LENGTH', args: (p) => serve(p, '--range', 'x'), code: 'ERR_INVALID_ARG' },
      { what: '--criu-page-server without --dump', args: (p) => serve(p, '--criu-page-server', '1'), code: 'ERR_INVALID_ARG' },
      { what: '--criu-page-server out of range', args: (p) => serve(p, '--dump', f('dump'), '--freeze', 'none', '--criu-page-server', '70000'), code: 'ERR_INVALID_ARG' },
      { what: 'a dump directory that is not there', args: (p) => serve(p, '--dump', f('nothing'), '--freeze', 'none'), code: 'ERR_INVALID_ARG' },
      { what: 'a dump directory with no dump', args: (p) => serve(p, '--dump', f('nodump'), '--freeze', 'none'), code: 'ERR_IMAGE' },
      { what: '--dump with a freeze', args: (p) => serve(p, '--dump', f('dump'), '--freeze', 'sigstop'), code: 'ERR_INVALID_ARG' },
      { what: 'both --pid and --image', args: (p) => serve(p, '--image', f('img')), code: 'ERR_INVALID_ARG' },
      { what: 'no such process', args: () => ['serve', '--pid', String(noSuchPid), '--listen', 'tcp://127.0.0.1:0'], code: 'ERR_INVALID_ARG' },
      { what: 'a pid that is not a number', args: () => ['serve', '--pid', 'abc', '--listen', 'tcp://127.0.0.1:0'], code: 'ERR_INVALID_ARG' },
      { what: 'a page size we do not serve', args: (p) => serve(p, '--page-size', '8192'), code: 'ERR_INVALID_ARG' },
      { what: 'an unknown freeze', args: (p) => serve(p, '--freeze', 'ice'), code: 'ERR_INVALID_ARG' },
      { what: '--base with --pid', args: (p) => serve(p, '--base', '4096'), code: 'ERR_INVALID_ARG' },
      { what: '--release with --image', args: () => ['serve', '--image', f('img'), '--listen', 'tcp://127.0.0.1:0', '--release'], code: 'ERR_INVALID_ARG' },
      { what: '--range with --image', args: () => ['serve', '--image', f('img'), '--listen', 'tcp://127.0.0.1:0', '--range', '0:4096'], code: 'ERR_INVALID_ARG' },
      { what: 'an image that is not there', args: () => ['serve', '--image', f('nothing'), '--listen', 'tcp://127.0.0.1:0'], code: 'ERR_INVALID_ARG' },
      { what: 'an empty image', args: () => ['serve', '--image', f('empty'), '--listen', 'tcp://127.0.0.1:0'], code: 'ERR_INVALID_ARG' },
      // Found only once listening, after the freeze: the process is let go before the error.
      { what: 'a port that is taken', args: (p) => ['serve', '--pid', String(p), '--listen', `tcp://127.0.0.1:${takenPort}`], code: 'ERR_INVALID_ARG' },
      { what: 'an images port that is taken', args: (p) => serve(p, '--images', f('dump'), '--images-listen', `tcp://127.0.0.1:${takenPort}`), code: 'ERR_INVALID_ARG' },
    ];
    await refusesAll(cases, join(root, 'serve'));
  });

  it('attach refuses each bad argument before it listens for a userfaultfd', async () => {
    // The process is the one that would hand its uffd over: no socket may be there for it.
    const noSocket = (_: CliRun, dir: string) => (existsSync(join(dir, 'uffd.sock')) ? 'it listened on --uffd-socket' : null);
    const attach = (dir: string, ...more: string[]) => ['attach', '--connect', 'tcp://127.0.0.1:1', '--uffd-socket', join(dir, 'uffd.sock'), '--timeout', '5', ...more];
    const cases = withCheck(noSocket, [
      { what: 'an unknown scheme', args: (_, d) => [...attach(d), '--connect', 'bogus://x'], code: 'ERR_INVALID_ARG' },
      { what: 'port 0 to connect to', args: (_, d) => [...attach(d), '--connect', 'tcp://127.0.0.1:0'], code: 'ERR_INVALID_ARG' },
      { what: 'a port above 65535', args: (_, d) => [...attach(d), '--connect', 'tcp://127.0.0.1:70000'], code: 'ERR_INVALID_ARG' },
      { what: 'tls:// without certificates', args: (_, d) => [...attach(d), '--connect', 'tls://127.0.0.1:1'], code: 'ERR_INVALID_ARG' },
      { what: 'certificates without tls://', args: (_, d) => attach(d, ...tls('target')), code: 'ERR_INVALID_ARG' },
      { what: '--tls-cert alone', args: (_, d) => [...attach(d), '--connect', 'tls://127.0.0.1:1', '--tls-cert', certs.files('target').cert], code: 'ERR_INVALID_ARG' },
      { what: 'neither --uffd-socket nor --recover', args: () => ['attach', '--connect', 'tcp://127.0.0.1:1', '--timeout', '5'], code: 'ERR_INVALID_ARG' },
      { what: 'both --uffd-socket and --recover', args: (_, d) => attach(d, '--recover', join(d, 'keeper.sock')), code: 'ERR_INVALID_ARG' },
      { what: 'a --uffd-socket in no directory', args: () => ['attach', '--connect', 'tcp://127.0.0.1:1', '--uffd-socket', '/nonexistent-dir/uffd.sock', '--timeout', '5'], code: 'ERR_INVALID_ARG' },
      { what: 'a --uffd-socket path taken', args: (_, d) => (writeFileSync(join(d, 'taken'), ''), ['attach', '--connect', 'tcp://127.0.0.1:1', '--uffd-socket', join(d, 'taken'), '--timeout', '5']), code: 'ERR_INVALID_ARG' },
      { what: 'a --recover socket that is not there', args: (_, d) => ['attach', '--connect', 'tcp://127.0.0.1:1', '--recover', join(d, 'keeper.sock'), '--timeout', '5'], code: 'ERR_INVALID_ARG' },
      { what: 'a --recover that is no socket', args: () => ['attach', '--connect', 'tcp://127.0.0.1:1', '--recover', f('img'), '--timeout', '5'], code: 'ERR_INVALID_ARG' },
      { what: 'a --recover-at in no directory', args: (_, d) => attach(d, '--recover-at', '/nonexistent-dir/keeper.sock'), code: 'ERR_INVALID_ARG' },
      { what: '--recover-grace without --recover-at', args: (_, d) => attach(d, '--recover-grace', '5'), code: 'ERR_INVALID_ARG' },
      { what: 'a --recover-grace of 0', args: (_, d) => attach(d, '--recover-at', join(d, 'keeper.sock'), '--recover-grace', '0'), code: 'ERR_INVALID_ARG' },
      { what: 'a key file that is not there', args: (_, d) => attach(d, '--key-file', f('nothing')), code: 'ERR_INVALID_ARG' },
      { what: 'a key too short', args: (_, d) => attach(d, '--key-file', f('short-key')), code: 'ERR_INVALID_ARG' },
      { what: '--key-id without --key-file', args: (_, d) => attach(d, '--key-id', 'k'), code: 'ERR_INVALID_ARG' },
      { what: 'a timeout of 0', args: (_, d) => attach(d, '--timeout', '0'), code: 'ERR_INVALID_ARG' },
      { what: 'a timeout longer than a timer holds', args: (_, d) => attach(d, '--timeout', '99999999'), code: 'ERR_INVALID_ARG' },
      { what: 'a reply timeout of 0', args: (_, d) => attach(d, '--reply-timeout', '0'), code: 'ERR_INVALID_ARG' },
      { what: 'a resume timeout that is not a number', args: (_, d) => attach(d, '--resume-timeout', 'soon'), code: 'ERR_INVALID_ARG' },
      { what: 'a negative readahead', args: (_, d) => attach(d, '--readahead', '-1'), code: 'ERR_INVALID_ARG' },
      { what: 'a page size we do not serve', args: (_, d) => attach(d, '--page-size', '1234'), code: 'ERR_INVALID_ARG' },
    ]);
    await refusesAll(cases, join(root, 'attach'));
  });

  it('lazy-pages refuses each bad argument before it listens for criu restore, and leaves the restored task alone', async () => {
    // Each case has a dump of its own in DIR/img, and the process as the restored task (--pidfile).
    // (--page-server takes several values, and several --page-server add up: given once, last)
    const lazy = (pid: number, dir: string, more: string[] = [], pageServer = ['tcp://127.0.0.1:1']) => {
      if (!existsSync(join(dir, 'img'))) cpSync(CRIU_FIXTURE, join(dir, 'img'), { recursive: true });
      writeFileSync(join(dir, 'restored.pid'), String(pid));
      return ['lazy-pages', '--images', join(dir, 'img'), '--pidfile', join(dir, 'restored.pid'), '--timeout', '5', ...more, '--page-server', ...pageServer];
    };
    const postcopy = ['--source', 'postcopy'];
    const noSocket = (_: CliRun, dir: string) => (existsSync(join(dir, 'img', 'lazy-pages.socket')) ? 'it listened for criu restore' : null);
    const cases = withCheck(noSocket, [
      { what: 'an images directory that is not there', args: (p, d) => lazy(p, d, ['--images', join(d, 'nothing')]), code: 'ERR_INVALID_ARG' },
      { what: 'an images directory that is a file', args: (p, d) => lazy(p, d, ['--images', f('img')]), code: 'ERR_INVALID_ARG' },
      { what: 'an unknown scheme', args: (p, d) => lazy(p, d, [], ['bogus://x']), code: 'ERR_INVALID_ARG' },
      { what: 'port 0 to connect to', args: (p, d) => lazy(p, d, [], ['tcp://127.0.0.1:0']), code: 'ERR_INVALID_ARG' },
      { what: 'a port above 65535', args: (p, d) => lazy(p, d, [], ['tcp://127.0.0.1:65536']), code: 'ERR_INVALID_ARG' },
      { what: 'tls:// (lazy-pages has no certificates)', args: (p, d) => lazy(p, d, postcopy, ['tls://127.0.0.1:1']), code: 'ERR_INVALID_ARG' },
      { what: "a Unix socket for CRIU's page server", args: (p, d) => lazy(p, d, [], ['unix:/tmp/criu.sock']), code: 'ERR_INVALID_ARG' },
      { what: 'a task given two sources', args: (p, d) => lazy(p, d, postcopy, ['1=tcp://127.0.0.1:1', '1=tcp://127.0.0.1:2']), code: 'ERR_INVALID_ARG' },
      { what: 'PID=ENDPOINT mixed with a bare endpoint', args: (p, d) => lazy(p, d, postcopy, ['1=tcp://127.0.0.1:1', 'tcp://127.0.0.1:2']), code: 'ERR_INVALID_ARG' },
      { what: 'a task pid of 0', args: (p, d) => lazy(p, d, postcopy, ['0=tcp://127.0.0.1:1']), code: 'ERR_INVALID_ARG' },
      { what: 'a bad endpoint after PID=', args: (p, d) => lazy(p, d, postcopy, ['1=tcp://127.0.0.1:99999']), code: 'ERR_INVALID_ARG' },
      { what: 'a bad --images-from', args: (p, d) => lazy(p, d, ['--images-from', 'bogus://x']), code: 'ERR_INVALID_ARG' },
      { what: 'a push batch of 0', args: (p, d) => lazy(p, d, ['--push-batch', '0']), code: 'ERR_INVALID_ARG' },
      { what: 'a push window of 0', args: (p, d) => lazy(p, d, ['--push-window', '0']), code: 'ERR_INVALID_ARG' },
      { what: 'a push window too wide', args: (p, d) => lazy(p, d, ['--push-window', '100000']), code: 'ERR_INVALID_ARG' },
      { what: 'a timeout of 0', args: (p, d) => lazy(p, d, ['--timeout', '0']), code: 'ERR_INVALID_ARG' },
      { what: "a key for CRIU's page server", args: (p, d) => lazy(p, d, ['--key-file', f('key')]), code: 'ERR_INVALID_ARG' },
      { what: 'a key file that is not there', args: (p, d) => lazy(p, d, [...postcopy, '--key-file', f('nothing')]), code: 'ERR_INVALID_ARG' },
      { what: 'a key too short', args: (p, d) => lazy(p, d, [...postcopy, '--key-file', f('short-key')]), code: 'ERR_INVALID_ARG' },
      { what: '--key-id without --key-file', args: (p, d) => lazy(p, d, [...postcopy, '--key-id', 'k']), code: 'ERR_INVALID_ARG' },
      { what: 'an unknown source kind', args: (p, d) => lazy(p, d, ['--source', 'ftp']), code: 'ERR_INVALID_ARG' },
      { what: "CRIU's --address and an endpoint both", args: (p, d) => lazy(p, d, ['--address', '127.0.0.1']), code: 'ERR_INVALID_ARG' },
      { what: "--page-server without --port", args: (p, d) => lazy(p, d, [], []), code: 'ERR_INVALID_ARG' },
      { what: 'a --port above 65535', args: (p, d) => lazy(p, d, ['--port', '70000'], []), code: 'ERR_INVALID_ARG' },
      { what: "PID=ENDPOINT for CRIU's page server (it serves the whole tree)", args: (p, d) => lazy(p, d, [], ['1=tcp://127.0.0.1:1']), code: 'ERR_INVALID_ARG' },
      { what: 'a verbosity that is not a level', args: (p, d) => lazy(p, d, ['--verbosity', 'loud']), code: 'ERR_INVALID_ARG' },
      { what: 'a --status-fd that is not open', args: (p, d) => lazy(p, d, ['--status-fd', '97']), code: 'ERR_INVALID_ARG' },
      { what: 'a log file in a directory that is not there', args: (p, d) => lazy(p, d, ['-o', join(d, 'nothing', 'lazy.log')]), code: 'ERR_INVALID_ARG' },
      { what: 'a work directory that is not there', args: (p, d) => lazy(p, d, ['-W', join(d, 'nothing')]), code: 'ERR_INVALID_ARG' },
      { what: '--tls with no certificate at the path', args: (p, d) => lazy(p, d, ['--tls', '--tls-cert', join(d, 'nothing.pem')]), code: 'ERR_INVALID_ARG' },
      { what: 'a revocation list (not checked here)', args: (p, d) => lazy(p, d, ['--tls', '--tls-cacrl', f('key')]), code: 'ERR_INVALID_ARG' },
      { what: '--tls for a postcopy source', args: (p, d) => lazy(p, d, [...postcopy, '--tls']), code: 'ERR_INVALID_ARG' },
    ]);
    await refusesAll(cases, join(root, 'lazy'));
  });

  it('migrate refuses each bad argument before CRIU runs, and says with --json that the original task runs', async () => {
    /** one JSON line on stdout: {ok: false, code, message, running: 'original'} */
    const reported = (code: string) => (run: CliRun) => {
      const lines = run.stdout.trim().split('\n').filter(Boolean);
      if (lines.length !== 1) return `${lines.length} lines on stdout, not 1: ${run.stdout}`;
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(lines[0]) as Record<string, unknown>;
      } catch {
        return `stdout is not JSON: ${lines[0]}`;
      }
      if (line.ok !== false || line.code !== code || typeof line.message !== 'string' || line.running !== 'original') return `stdout says ${lines[0]}`;
      return run.status === 1 ? null : `exit status ${run.status}, not 1`;
    };
    const migrate = (pid: number | string, ...more: string[]) => ['migrate', '--pid', String(pid), '--json', ...more];
    const cases = withCheck(reported('ERR_INVALID_ARG'), [
      { what: 'no such process', args: () => migrate(noSuchPid), code: 'ERR_INVALID_ARG' },
      { what: 'a pid that is not a number', args: () => migrate('abc'), code: 'ERR_INVALID_ARG' },
      { what: 'a pid of 0', args: () => migrate(0), code: 'ERR_INVALID_ARG' },
      { what: 'a CRIU port of 0', args: (p) => migrate(p, '--criu-port', '0'), code: 'ERR_INVALID_ARG' },
      { what: 'a CRIU port above 65535', args: (p) => migrate(p, '--criu-port', '70000'), code: 'ERR_INVALID_ARG' },
      { what: 'a CRIU port that is not a number', args: (p) => migrate(p, '--criu-port', 'x'), code: 'ERR_INVALID_ARG' },
      { what: 'a relative work dir', args: (p) => migrate(p, '--work-dir', 'relative/dir'), code: 'ERR_INVALID_ARG' },
      { what: 'a work dir the shell would split', args: (p) => migrate(p, '--work-dir', '/var/lib/a b;true'), code: 'ERR_INVALID_ARG' },
      { what: 'a work dir that climbs out of the root', args: (p) => migrate(p, '--work-dir', '/var/lib/../../etc'), code: 'ERR_INVALID_ARG' },
      { what: '--to a host that is no address', args: (p) => migrate(p, '--to', 'bogus!', '--state-dir', root), code: 'ERR_INVALID_ARG' },
      { what: '--to a port above 65535', args: (p) => migrate(p, '--to', '10.0.0.2:70000', '--state-dir', root), code: 'ERR_INVALID_ARG' },
      { what: '--to a unix: endpoint', args: (p) => migrate(p, '--to', 'unix:/tmp/x', '--state-dir', root), code: 'ERR_INVALID_ARG' },
      { what: '--to with --netns', args: (p) => migrate(p, '--to', '10.0.0.2', '--netns', '--state-dir', root), code: 'ERR_INVALID_ARG' },
      { what: '--to with --mode stock', args: (p) => migrate(p, '--to', '10.0.0.2', '--mode', 'stock', '--state-dir', root), code: 'ERR_INVALID_ARG' },
      { what: '--to with --work-dir', args: (p) => migrate(p, '--to', '10.0.0.2', '--work-dir', '/var/lib/x', '--state-dir', root), code: 'ERR_INVALID_ARG' },
      { what: '--to with a state dir that is not there', args: (p) => migrate(p, '--to', '10.0.0.2', '--state-dir', f('no-such-dir')), code: 'ERR_INVALID_ARG' },
      { what: '--state-dir without --to', args: (p) => migrate(p, '--state-dir', root), code: 'ERR_INVALID_ARG' },
    ]);
    // An agent that is not there: nothing was frozen, the task runs on.
    cases.push({ what: '--to with no agent on this host', args: (p, dir) => migrate(p, '--to', '10.0.0.2', '--state-dir', dir), code: 'ERR_PEER_CLOSED', check: reported('ERR_PEER_CLOSED') });
    // commander's own refusals come before the command runs: the code on stderr, no JSON line
    cases.push({ what: 'an unknown mode', args: (p) => migrate(p, '--mode', 'teleport'), code: 'ERR_INVALID_ARG' });
    await refusesAll(cases, join(root, 'migrate'));
  });
});

describe('postcopy agent: bad arguments are refused before it listens', () => {
  let root: string;
  let certs: TestCerts;
  const f = (name: string) => join(root, name);
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'pc-agent-args-'));
    writeFileSync(f('key'), randomBytes(32).toString('hex'));
    writeFileSync(f('short-key'), 'too short');
    writeFileSync(f('a-file'), '');
    certs = makeCerts();
  });
  after(() => {
    rmSync(root, { recursive: true, force: true });
    if (certs) rmSync(certs.dir, { recursive: true, force: true });
  });

  it('refuses each bad argument with ERR_INVALID_ARG, and listens nowhere', async () => {
    const tls = ['--tls-cert', certs.files('target').cert, '--tls-key', certs.files('target').key, '--tls-ca', certs.files('target').ca];
    const agent = (dir: string, ...more: string[]) => ['agent', '--state-dir', join(dir, 'state'), ...more];
    const cases: BadCase[] = [
      { what: 'tcp:// without a key', args: (_, d) => agent(d, '--listen', 'tcp://127.0.0.1:0'), code: 'ERR_INVALID_ARG' },
      { what: 'tls:// without certificates', args: (_, d) => agent(d, '--listen', 'tls://127.0.0.1:0'), code: 'ERR_INVALID_ARG' },
      { what: 'certificates with tcp://', args: (_, d) => agent(d, '--listen', 'tcp://127.0.0.1:0', '--key-file', f('key'), ...tls), code: 'ERR_INVALID_ARG' },
      { what: 'a unix: port', args: (_, d) => agent(d, '--listen', `unix:${d}/a.sock`, '--key-file', f('key')), code: 'ERR_INVALID_ARG' },
      { what: 'a bogus endpoint', args: (_, d) => agent(d, '--listen', 'bogus://x', '--key-file', f('key')), code: 'ERR_INVALID_ARG' },
      { what: 'a port above 65535', args: (_, d) => agent(d, '--listen', 'tcp://127.0.0.1:99999', '--key-file', f('key')), code: 'ERR_INVALID_ARG' },
      { what: 'a short key', args: (_, d) => agent(d, '--listen', 'tcp://127.0.0.1:0', '--key-file', f('short-key')), code: 'ERR_INVALID_ARG' },
      { what: 'a key file that is not there', args: (_, d) => agent(d, '--listen', 'tcp://127.0.0.1:0', '--key-file', f('nothing')), code: 'ERR_INVALID_ARG' },
      { what: 'a state dir that is a file', args: () => ['agent', '--state-dir', f('a-file'), '--listen', 'tcp://127.0.0.1:0', '--key-file', f('key')], code: 'ERR_INVALID_ARG' },
      { what: 'metrics on a unix: socket', args: (_, d) => agent(d, '--listen', 'tcp://127.0.0.1:0', '--key-file', f('key'), '--metrics-listen', `unix:${d}/m.sock`), code: 'ERR_INVALID_ARG' },
      { what: 'a name with a slash', args: (_, d) => agent(d, '--listen', 'tcp://127.0.0.1:0', '--key-file', f('key'), '--name', 'a/b'), code: 'ERR_INVALID_ARG' },
    ];
    await refusesAll(withCheck((run, dir) => (existsSync(join(dir, 'state', 'agent.sock')) ? 'it made its socket' : null), cases), join(root, 'cases'));
  });
});

/** A target's side of a connection, frame by frame, on the event loop. */
class Target {
  #socket: Socket;
  #decoder = new FrameDecoder();
  #frames: Frame[] = [];
  #waiters: (() => void)[] = [];
  closed = false;
  /** resolves once connected */
  readonly connected: Promise<void>;

  constructor(port: number) {
    this.#socket = connect(port, '127.0.0.1');
    this.connected = new Promise((r) => this.#socket.once('connect', () => r()));
    this.#socket.on('data', (chunk) => {
      this.#frames.push(...this.#decoder.push(chunk));
      this.#wake();
    });
    this.#socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    this.#socket.on('error', () => {});
  }

  #wake(): void {
    this.#waiters.splice(0).forEach((w) => w());
  }

  /** The next frame (null once closed), within 10 s. */
  async next(): Promise<Frame | null> {
    const deadline = Date.now() + 10_000;
    while (this.#frames.length === 0 && !this.closed) {
      if (Date.now() > deadline) throw new Error('no frame from the source within 10 s');
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 100);
      });
    }
    return this.#frames.shift() ?? null;
  }

  /** HELLO (with a key when given), AUTH if asked: true once REGIONS came. */
  async handshake(k: PresharedKey | null = null): Promise<boolean> {
    const nonceTarget = newNonce();
    this.#socket.write(encodeHello({ version: PROTOCOL_VERSION, pageSize: PS, features: Feature.AUTH, role: Role.TARGET, auth: k ? targetHelloAuth(k, nonceTarget) : new Uint8Array(0) }));
    const hello = await this.next();
    if (!hello || hello.type !== FrameType.HELLO) return false;
    if (k) this.#socket.write(encodeAuth(proof('target', k, nonceTarget, hello.auth.subarray(0, 32))));
    return (await this.next())?.type === FrameType.REGIONS;
  }

  /** GET one page: the type of the frame that answers. */
  async get(page: number): Promise<number | null> {
    this.#socket.write(encodeGet(1, 0, page, 1));
    return (await this.next())?.type ?? null;
  }

  bye(reason: number): void {
    this.#socket.end(encodeBye(reason));
  }

  /** The connection breaks: no BYE. */
  lose(): void {
    this.#socket.destroy();
  }

  /** Until the source has closed its side. */
  async gone(): Promise<void> {
    while ((await this.next()) !== null);
  }
}

/** Resolves with the server's next 'connection-end' (within 10 s); call before what causes it. */
function nextEnd(server: PageServer): Promise<ConnectionEnd> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no connection ended within 10 s')), 10_000);
    server.once('connection-end', (e: ConnectionEnd) => {
      clearTimeout(timer);
      resolve(e);
    });
  });
}

/** p, or a failure after 10 s. */
function within10s<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not happen within 10 s`)), 10_000)))]).finally(() => clearTimeout(timer));
}

for (const engine of ['thread', 'loop'] as const satisfies readonly ServerEngine[])
  describe(`page server completion (${engine} engine)`, () => {
    let dir: string;
    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'pc-complete-'));
      makeImage(join(dir, 'img'), 16 * PS);
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    async function serving(grants?: PresharedKey[]) {
      const source = new ImageFileSource(join(dir, 'img'));
      const server = new PageServer(source, { engine, grants });
      const listener = await server.listen(new TcpTransport('127.0.0.1', 0));
      const port = (listener.endpoint as { port: number }).port;
      return { server, port, close: async () => (await server.close(), source.close()) };
    }

    it("is not complete when a parent says DONE while its fork child's connection is open; it is once the child says DONE", async () => {
      const s = await serving();
      let completed = false;
      const complete = s.server.whenComplete().then(() => (completed = true));
      try {
        const parent = new Target(s.port);
        assert.ok(await parent.handshake());
        const child = new Target(s.port); // the child's handler connects before the parent's closes
        assert.ok(await child.handshake());
        const parentEnd = nextEnd(s.server);
        parent.bye(ByeReason.DONE);
        assert.deepEqual({ ...(await parentEnd), id: 0 }, { id: 0, served: true, keyId: null, done: true });
        assert.equal(s.server.openConnections, 1);
        assert.equal(s.server.isComplete(), false, 'complete while the child is connected');
        assert.equal(await child.get(0), FrameType.PAGES, 'the child is still served after the parent is done');
        assert.equal(completed, false);
        child.bye(ByeReason.DONE);
        await within10s(complete, 'completion once the child said DONE');
        assert.equal(s.server.openConnections, 0);
        assert.deepEqual(s.server.ended.map((e) => e.done), [true, true]);
      } finally {
        await s.close();
      }
    });

    it('is not complete after a lost connection until a connection accepted after it says DONE', async () => {
      const s = await serving();
      try {
        const push = new Target(s.port);
        assert.ok(await push.handshake());
        const fault = new Target(s.port);
        assert.ok(await fault.handshake());
        let end = nextEnd(s.server);
        fault.lose();
        assert.equal((await end).done, false);
        end = nextEnd(s.server);
        push.bye(ByeReason.DONE); // accepted before the lost one: no resumption of it
        await end;
        assert.equal(s.server.openConnections, 0);
        assert.equal(s.server.isComplete(), false, 'a lost connection the target has not resumed');
        const resumed = new Target(s.port);
        assert.ok(await resumed.handshake());
        end = nextEnd(s.server);
        resumed.bye(ByeReason.DONE);
        await end;
        assert.equal(s.server.isComplete(), true);
        await within10s(s.server.whenComplete(), 'completion');
      } finally {
        await s.close();
      }
    });

    it('is not complete after a BYE ABORT, even with an earlier DONE, until a later connection says DONE', async () => {
      const s = await serving();
      try {
        for (const reason of [ByeReason.DONE, ByeReason.ABORT]) {
          const t = new Target(s.port);
          assert.ok(await t.handshake());
          const end = nextEnd(s.server);
          t.bye(reason);
          await end;
        }
        assert.equal(s.server.isComplete(), false, 'the DONE came before the ABORT');
        // a connection that fails its handshake is no target: it neither holds nor makes completion
        const stranger = new Target(s.port);
        await within10s(stranger.connected, 'connecting');
        let end = nextEnd(s.server);
        stranger.lose();
        assert.equal((await end).served, false);
        assert.equal(s.server.isComplete(), false);
        const retry = new Target(s.port);
        assert.ok(await retry.handshake());
        end = nextEnd(s.server);
        retry.bye(ByeReason.DONE);
        await end;
        assert.equal(s.server.isComplete(), true);
      } finally {
        await s.close();
      }
    });

    it('with several keys, is complete only once a target of each key has said DONE; a wrong key holds nothing', async () => {
      const keys = ['one', 'two'].map((keyId) => ({ keyId, key: randomBytes(32) }));
      const s = await serving(keys);
      const ids = keys.map((k) => k.keyId);
      try {
        const first = new Target(s.port);
        assert.ok(await first.handshake(keys[0]));
        let end = nextEnd(s.server);
        first.bye(ByeReason.DONE);
        assert.equal((await end).keyId, 'one');
        assert.equal(s.server.isComplete(ids), false, 'no target of key "two" is done');
        const impostor = new Target(s.port);
        end = nextEnd(s.server);
        assert.equal(await impostor.handshake({ keyId: 'two', key: randomBytes(32) }), false);
        assert.equal((await end).served, false);
        const second = new Target(s.port);
        assert.ok(await second.handshake(keys[1]));
        end = nextEnd(s.server);
        second.bye(ByeReason.DONE);
        await end;
        assert.equal(s.server.isComplete(ids), true);
        await within10s(s.server.whenComplete({ keyIds: ids }), 'completion');
      } finally {
        await s.close();
      }
    });
  });

describe('postcopy serve', () => {
  it('ends only after the last target connected says DONE: a fork child connected before its parent said DONE', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-serve-fork-'));
    makeImage(join(dir, 'img'), 16 * PS);
    const serve = spawnTs(CLI, ['serve', '--image', join(dir, 'img'), '--listen', 'tcp://127.0.0.1:0', '--json']);
    const out = jsonLines(serve);
    try {
      const listening = await out.next((e) => e.event === 'listening');
      const port = Number(/:(\d+)$/.exec(listening.endpoint as string)![1]);
      const parent = new Target(port);
      assert.ok(await parent.handshake());
      const child = new Target(port);
      assert.ok(await child.handshake());
      parent.bye(ByeReason.DONE);
      await parent.gone(); // the serve has seen the parent's DONE and closed its connection
      assert.equal(await child.get(3), FrameType.PAGES, 'the child is served after its parent is done');
      child.bye(ByeReason.DONE);
      const done = await out.next((e) => e.event === 'done', 10_000);
      assert.equal(done.complete, true);
      assert.equal((done.stats as { connections: number }).connections, 2);
      assert.equal(await within10s(out.exit, 'the serve ending'), 0);
    } finally {
      kill(serve);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
