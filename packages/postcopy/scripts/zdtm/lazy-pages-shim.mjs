// `criu lazy-pages ARGS` as zdtm runs it, answered by `postcopy lazy-pages` (criu-shim runs this
// inside the CRIU root). zdtm runs, in the test directory:
//   criu lazy-pages --no-default-config --log-file lazy-pages.log --images-dir DIR --verbosity=4
//        [--page-server --port 12345 --address 127.0.0.1] [--tls...] --status-fd N
// and waits for one zero byte on N before it starts `criu restore --lazy-pages`.
//
// When our CLI takes CRIU's own arguments (its lazy-pages knows --images-dir), they go through
// unchanged (ZDTM_NO_PUSH=1 adds --no-push). Until then they are translated to the older
// `lazy-pages --images DIR --page-server tcp://A:P --json`: the zero byte is written once it says
// "listening", and its output goes to the log file zdtm reads.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { constants } from 'node:os';

const here = dirname(fileURLToPath(import.meta.url));
// ZDTM_POSTCOPY_CLI: a snapshot of our build (zdtm.mjs); else the checkout's.
const CLI = process.env.ZDTM_POSTCOPY_CLI || resolve(here, '..', '..', 'dist', 'cli', 'main.js');
const args = process.argv.slice(2);
const noPush = process.env.ZDTM_NO_PUSH === '1';

/** Whether this build of ours takes CRIU's arguments (ZDTM_POSTCOPY_ARGS=criu|criu-no-config|translate forces one). */
function takesCriuArgs() {
  const forced = process.env.ZDTM_POSTCOPY_ARGS;
  if (forced === 'criu' || forced === 'criu-no-config') return true;
  if (forced === 'translate') return false;
  const help = spawnSync(process.execPath, [CLI, 'lazy-pages', '--help'], { encoding: 'utf8', timeout: 30_000 });
  return /--images-dir/.test(`${help.stdout}${help.stderr}`);
}

/** CRIU's getopt forms: --opt V, --opt=V, -xV, -x V. */
function parseCriu(argv) {
  const o = { pageServer: false, verbosity: 2, tls: false };
  const withValue = { '--log-file': 'log', '-o': 'log', '--images-dir': 'images', '-D': 'images', '--work-dir': 'work', '-W': 'work', '--status-fd': 'statusFd', '--address': 'address', '--port': 'port' };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let value;
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    if (eq > 0) [a, value] = [a.slice(0, eq), a.slice(eq + 1)];
    else if (/^-[oDW]./.test(a)) [a, value] = [a.slice(0, 2), a.slice(2)];
    if (withValue[a]) o[withValue[a]] = value ?? argv[++i];
    else if (a === '--page-server') o.pageServer = true;
    else if (a === '--verbosity' || a.startsWith('-v')) o.verbosity = value ?? a.slice(2);
    else if (a.startsWith('--tls')) o.tls = true;
  }
  return o;
}

function passThrough() {
  // ZDTM_POSTCOPY_ARGS=criu-no-config: all but --no-default-config (CRIU: do not read
  // /etc/criu/default.conf), for a build of ours that refuses it.
  const given = process.env.ZDTM_POSTCOPY_ARGS === 'criu-no-config' ? args.filter((a) => a !== '--no-default-config') : args;
  const argv = [CLI, 'lazy-pages', ...given, ...(noPush ? ['--no-push'] : [])];
  // Every fd zdtm gave us (--status-fd among them) stays where it is: inherit 0..N.
  const fdArg = args.findIndex((a) => a === '--status-fd' || a.startsWith('--status-fd='));
  const statusFd = fdArg < 0 ? -1 : Number(args[fdArg].includes('=') ? args[fdArg].split('=')[1] : args[fdArg + 1]);
  const stdio = ['inherit', 'inherit', 'inherit'];
  for (let fd = 3; fd <= statusFd; fd++) stdio.push(fd === statusFd ? fd : 'ignore');
  return spawn(process.execPath, argv, { stdio });
}

function translated() {
  const o = parseCriu(args);
  if (!o.images) throw new Error('lazy-pages-shim: no --images-dir');
  const work = o.work ?? o.images;
  const logPath = o.log ? (isAbsolute(o.log) ? o.log : join(work, o.log)) : null;
  const logFd = logPath ? openSync(logPath, 'a') : 2;
  const say = (line) => writeSync(logFd, `${line}\n`);
  const argv = [CLI, 'lazy-pages', '--images', o.images, '--json'];
  if (o.pageServer) argv.push('--page-server', `tcp://${o.address ?? '127.0.0.1'}:${o.port ?? 12345}`);
  // No --page-server: CRIU's local-images mode, which this build of ours lacks (it says so itself).
  if (o.tls) say('Warn: lazy-pages-shim: --tls is not translated');
  if (noPush) argv.push('--no-push');
  say(`lazy-pages-shim: translated \`criu lazy-pages ${args.join(' ')}\` to \`postcopy ${argv.slice(1).join(' ')}\``);
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, POSTCOPY_LOG: process.env.POSTCOPY_LOG ?? 'info' } });
  let signalled = false;
  createInterface({ input: child.stdout }).on('line', (line) => {
    say(line);
    if (!signalled && o.statusFd !== undefined && /"event":"listening"/.test(line)) {
      signalled = true;
      writeSync(Number(o.statusFd), Buffer.from([0]));
      closeSync(Number(o.statusFd));
    }
  });
  createInterface({ input: child.stderr }).on('line', (line) => say(line));
  return child;
}

const child = takesCriuArgs() ? passThrough() : translated();
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => {
  const status = code ?? 128 + (constants.signals[signal] ?? 0);
  if (code !== 0) process.stderr.write(`lazy-pages-shim: postcopy lazy-pages ended with ${signal ? `signal ${signal}` : `exit code ${code}`}\n`);
  // Give the line readers a moment to drain into the log.
  setTimeout(() => process.exit(status), 50);
});
