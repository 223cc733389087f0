#!/usr/bin/env node
// `npm run zdtm`: CRIU's own test suite, zdtm, in its lazy-pages modes, with stock `criu lazy-pages`
// and with `postcopy lazy-pages` in its place, side by side. See docs/compat.md.
//
// It builds zdtm once, inside the CRIU root, from Debian's source of the root's criu (prepare.sh),
// then runs each (test, flavour, mode, implementation) as its own `zdtm.py run -t TEST`, bounded by
// --timeout, and writes the table (markdown and JSON) after each. A second run resumes: what has a
// result is not run again (--retry runs the failures again, --fresh forgets everything).
//
//   npm run zdtm -- [--flavour h,ns] [--mode lazy,remote] [--impl stock,postcopy] [--no-push]
//                   [--set host|ns|npm-test] [-t TEST]... [--tests REGEX] [--sample N]
//                   [--timeout S] [--jobs N] [--out DIR] [--retry] [--fresh] [--list]
//                   [--postcopy-args auto|criu|criu-no-config|translate] [--live]
//
// Needs root and Debian's mirror (the first time), and a build of ours (`npm run build`).
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..', '..', '..', '..');
const CRIU_ROOT_SH = join(REPO, 'packages', 'postcopy', 'scripts', 'criu-root.sh');
const CLI = join(REPO, 'packages', 'postcopy', 'dist', 'cli', 'main.js');
const SHIM = join(HERE, 'criu-shim');
const ROOT = process.env.POSTCOPY_CRIU_ROOT ?? '/var/cache/postcopy/trixie';
const NODE_IN_ROOT = '/run/postcopy-node';

/** The tests of npm test's subset (test/zdtm.test.ts), one per case of issue 20. */
export const NPM_TEST_SET = ['zdtm/static/maps01', 'zdtm/transition/fork', 'zdtm/static/maps06', 'zdtm/static/uffd-events', 'zdtm/transition/fork2', 'zdtm/static/pthread00'];

/**
 * The ns flavour's memory-heavy set: of the tests zdtm allows in lazy mode with an ns flavour, those
 * whose subject is memory or a process tree (maps*, mem*, fork*, shm*, vdso*, threads, zombies,
 * every transition/ test), plus mem-touch (zdtm's -a leaves it out: noauto).
 */
const NS_MEMORY = /^zdtm\/(transition\/|static\/(maps|mem|mmap|mprotect|mlock|thp|uffd|vdso|shm|pthread|fork|clone|zombie|helper_zombie|dumpable|sigaltstack|wait00|unlink_mmap|mtime_mmap|pipe0|packet_sock_mmap|file_shared|vsx|fpu|futex|pid00|pstree|busyloop|sleeping|cow))/;
const NS_EXTRA = ['zdtm/static/mem-touch'];

const MODES = { lazy: '--lazy-pages', remote: '--remote-lazy-pages' };
const IMPLS = ['stock', 'postcopy', 'postcopy-nopush'];
const IMPL_TITLE = { stock: 'stock', postcopy: 'ours', 'postcopy-nopush': 'ours --no-push' };

function usage(msg) {
  if (msg) console.error(`zdtm: ${msg}`);
  console.error(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1, 17).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
  process.exit(2);
}

function options(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      flavour: { type: 'string', default: 'h,ns' },
      mode: { type: 'string', default: 'lazy,remote' },
      impl: { type: 'string', default: 'stock,postcopy' },
      'no-push': { type: 'boolean', default: false },
      set: { type: 'string' },
      test: { type: 'string', short: 't', multiple: true },
      tests: { type: 'string' },
      sample: { type: 'string' },
      timeout: { type: 'string', default: '240' },
      jobs: { type: 'string', default: '1' },
      out: { type: 'string', default: '/var/cache/postcopy/zdtm-results' },
      retry: { type: 'boolean', default: false },
      fresh: { type: 'boolean', default: false },
      list: { type: 'boolean', default: false },
      'postcopy-args': { type: 'string', default: 'auto' },
      live: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) usage();
  const list = (v, allowed, what) => {
    const xs = v.split(',').map((s) => s.trim()).filter(Boolean);
    for (const x of xs) if (!allowed.includes(x)) usage(`${what}: ${x} is not one of ${allowed.join(', ')}`);
    return xs;
  };
  let impls = list(values.impl, IMPLS, '--impl');
  if (values['no-push']) impls = impls.map((i) => (i === 'postcopy' ? 'postcopy-nopush' : i));
  const int = (v, what, min) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) usage(`${what}: an integer of at least ${min}, not ${v}`);
    return n;
  };
  return {
    flavours: list(values.flavour, ['h', 'ns'], '--flavour'),
    modes: list(values.mode, Object.keys(MODES), '--mode'),
    impls: [...new Set(impls)],
    set: values.set ? list(values.set, ['host', 'ns', 'npm-test'], '--set')[0] : null,
    tests: values.test ?? [],
    filter: values.tests ? new RegExp(values.tests) : null,
    sample: values.sample ? int(values.sample, '--sample', 1) : 0,
    timeoutS: int(values.timeout, '--timeout', 10),
    jobs: int(values.jobs, '--jobs', 1),
    out: resolve(values.out),
    retry: values.retry,
    fresh: values.fresh,
    list: values.list,
    live: values.live,
    postcopyArgs: list(values['postcopy-args'], ['auto', 'criu', 'criu-no-config', 'translate'], '--postcopy-args')[0],
  };
}

/** Host paths the root sees: this repository and `extra` (same paths) and node's directory. */
export function rootBinds(extra = []) {
  return [`${REPO}=${REPO}`, `${dirname(process.execPath)}=${NODE_IN_ROOT}`, ...extra.map((p) => `${p}=${p}`)].join(' ');
}

/** argv and env of a command inside the CRIU root, which sees the repository and node. */
export function inRoot(cmd, env = {}, extraBinds = []) {
  return { argv: ['bash', CRIU_ROOT_SH, 'exec', 'bash', '-c', cmd], env: { ...process.env, POSTCOPY_CRIU_ROOT: ROOT, POSTCOPY_ROOT_BINDS: rootBinds(extraBinds), ...env } };
}

/**
 * A copy of our build (dist, the native addon and helpers, package.json; node_modules linked) in
 * dir, so that a run of hours measures one build while `npm run build` goes on in the checkout.
 * Returns its CLI and when the build was made (its newest file).
 */
export function snapshotOurs(dir) {
  const pkg = join(REPO, 'packages', 'postcopy');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'build'), { recursive: true });
  cpSync(join(pkg, 'dist'), join(dir, 'dist'), { recursive: true });
  cpSync(join(pkg, 'build', 'Release'), join(dir, 'build', 'Release'), { recursive: true });
  cpSync(join(pkg, 'package.json'), join(dir, 'package.json'));
  symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'));
  let newest = 0;
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  walk(join(pkg, 'dist'));
  return { cli: join(dir, 'dist', 'cli', 'main.js'), builtAt: new Date(newest).toISOString() };
}

/** Builds the root and zdtm in it (idempotent); returns zdtm's test directory inside the root. */
export function prepare(log = (s) => process.stderr.write(s)) {
  if (process.getuid?.() !== 0) throw new Error('zdtm runs as root (CRIU, namespaces, sysctls)');
  if (ROOT === '/') throw new Error("POSTCOPY_CRIU_ROOT=/: zdtm is built inside the managed root only");
  if (!existsSync(CLI)) throw new Error(`no build of ours at ${CLI}: run \`npm run build\` first`);
  const ensure = spawnSync('bash', [CRIU_ROOT_SH, 'ensure'], { encoding: 'utf8', env: { ...process.env, POSTCOPY_CRIU_ROOT: ROOT }, timeout: 1_800_000 });
  if (ensure.status !== 0) throw new Error(`criu-root.sh ensure failed: ${ensure.stderr.trim().split('\n').slice(-3).join(' ')}`);
  const { argv, env } = inRoot(`exec ${join(HERE, 'prepare.sh')}`);
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', env, timeout: 3_600_000, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.stderr) log(r.stderr);
  if (r.status !== 0) throw new Error(`zdtm prepare failed (${r.status}): ${r.stderr.trim().split('\n').slice(-3).join(' ')}`);
  return r.stdout.trim().split('\n').pop();
}

/** zdtm's tests with their flavours and flags (list-tests.py, zdtm.py's own way of finding them). */
export function zdtmTests(testDir) {
  const { argv, env } = inRoot(`cd ${testDir} && exec python3 ${join(HERE, 'list-tests.py')}`);
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', env, timeout: 120_000 });
  if (r.status !== 0) throw new Error(`cannot list zdtm's tests: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const ARCH = process.arch === 'x64' ? 'x86_64' : process.arch;
/** What zdtm's own -a selection runs in lazy mode (remote: less noremotelazy) in this flavour. */
export function lazySelection(all, flavour, mode) {
  return all.filter((t) => !t.flags.includes('noauto') && !t.flags.includes('nolazy') && !(mode === 'remote' && t.flags.includes('noremotelazy')) && t.flavor.includes(flavour) && (!t.arch || t.arch === ARCH)).map((t) => t.name);
}

/** Why zdtm's -a leaves a test out of this flavour and mode, or null. */
export function exclusion(t, flavour, mode) {
  if (t.flags.includes('noauto')) return 'noauto: zdtm runs it only by name';
  if (t.flags.includes('nolazy')) return 'nolazy: zdtm says lazy pages cannot restore it';
  if (mode === 'remote' && t.flags.includes('noremotelazy')) return 'noremotelazy';
  if (!t.flavor.includes(flavour)) return `flavour: only ${t.flavor.join(', ')}`;
  if (t.arch && t.arch !== ARCH) return `arch: ${t.arch} only`;
  return null;
}

function selection(o, all) {
  const byName = new Map(all.map((t) => [t.name, t]));
  const items = [];
  for (const flavour of o.flavours)
    for (const mode of o.modes) {
      let names;
      if (o.tests.length) names = o.tests.map((n) => (n.startsWith('zdtm/') ? n : `zdtm/${n}`));
      else if (o.set === 'npm-test') names = NPM_TEST_SET;
      else if (flavour === 'ns' || o.set === 'ns') names = [...lazySelection(all, 'ns', mode).filter((n) => NS_MEMORY.test(n)), ...NS_EXTRA.filter((n) => byName.has(n))];
      else names = lazySelection(all, flavour, mode);
      if (o.filter) names = names.filter((n) => o.filter.test(n));
      if (o.sample && names.length > o.sample) {
        const step = names.length / o.sample;
        names = Array.from({ length: o.sample }, (_, i) => names[Math.floor(i * step)]);
      }
      for (const test of names) {
        if (!byName.has(test)) usage(`no zdtm test ${test}`);
        const excl = byName.get(test).flags.includes('excl');
        for (const impl of o.impls) items.push({ test, flavour, mode, impl, ...(excl ? { excl } : {}) });
      }
    }
  return items;
}

export const keyOf = (r) => `${r.flavour}|${r.mode}|${r.impl}|${r.test}`;

const LOCKS = join(ROOT, 'var', 'lib', 'zdtm', 'locks');

/**
 * The sysctls zdtm needs and the ones it leaves changed, put back by restore() (also on failure).
 * Every zdtm.py sets vm.nr_hugepages to 20 while it runs, so the value is read and written only
 * while no zdtm run holds the shared lock (another harness's, npm test's): under it exclusively.
 */
export function sysctlGuard() {
  const PIPE = '/proc/sys/fs/pipe-max-size';
  const HUGE = '/proc/sys/vm/nr_hugepages';
  mkdirSync(LOCKS, { recursive: true });
  const underLock = (wait, script, ...args) =>
    spawnSync('flock', [...(wait ? ['-w', '300'] : ['-n']), '-x', join(LOCKS, 'all.lock'), 'sh', '-c', script, 'sh', ...args], { encoding: 'utf8' });
  const pipe = readFileSync(PIPE, 'utf8').trim();
  const read = underLock(true, 'cat "$1"', HUGE);
  const huge = read.status === 0 ? read.stdout.trim() : '0';
  // stock's remote mode: CRIU's lazy page server asks for 4 MiB pipes (no CAP_SYS_RESOURCE here)
  if (Number(pipe) < 4 << 20) writeFileSync(PIPE, String(4 << 20));
  const putHuge = (wait) => underLock(wait, '[ "$(cat "$1")" = "$2" ] || echo "$2" > "$1"', HUGE, huge);
  return {
    /** after a run: a failed hugetlb test leaves vm.nr_hugepages at 20 (skipped while another run goes) */
    afterTest: () => putHuge(false),
    restore: () => {
      putHuge(true);
      try {
        if (readFileSync(PIPE, 'utf8').trim() !== pipe) writeFileSync(PIPE, pipe);
      } catch {}
    },
  };
}

/** Runs one zdtm test in the root, bounded; returns its result. */
export function runOne(testDir, item, timeoutS, logDir, postcopyArgs = 'auto', cli = null) {
  const cmd = `cd ${testDir} && exec ./zdtm.py run -t ${item.test} -f ${item.flavour} ${MODES[item.mode]} --criu-bin ${SHIM} --crit-bin /usr/bin/crit`;
  const { argv, env } = inRoot(cmd, {
    ZDTM_LAZY: item.impl === 'stock' ? 'stock' : 'postcopy',
    ZDTM_NO_PUSH: item.impl === 'postcopy-nopush' ? '1' : '',
    ZDTM_NODE: join(NODE_IN_ROOT, basename(process.execPath)),
    ZDTM_AS_ROOT: '1',
    ZDTM_POSTCOPY_ARGS: postcopyArgs,
    ...(cli ? { ZDTM_POSTCOPY_CLI: cli } : {}),
  }, cli ? [dirname(dirname(dirname(cli)))] : []);
  // One run of a test at a time, whoever runs it (this script, npm test): runs of one test share
  // its files and dump directory in zdtm's tree. A test zdtm flags `excl` (cgroups, file locks,
  // iptables: host-wide state) runs alone, as zdtm's --parallel runs it.
  mkdirSync(LOCKS, { recursive: true });
  const lock = ['flock', '-w', String(timeoutS), item.excl ? '-x' : '-s', join(LOCKS, 'all.lock'), 'flock', '-w', String(timeoutS), join(LOCKS, `${item.test.replaceAll('/', '_')}.lock`)];
  const started = Date.now();
  return new Promise((done) => {
    const child = spawn(lock[0], [...lock.slice(1), ...argv], { env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      // zdtm runs in a pid namespace of its own (zdtm_ct): with its init gone every task of it goes.
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {}
    }, timeoutS * 1000);
    child.on('close', (code) => {
      clearTimeout(timer);
      const s = Math.round((Date.now() - started) / 100) / 10;
      const esc = item.test.replace(/[.+]/g, '\\$&');
      const pass = new RegExp(`Test ${esc} PASS`).test(out);
      const fail = new RegExp(`Test ${esc} FAIL at (.+?) #`).exec(out);
      const skip = new RegExp(`Skipping ${esc} \\((.+)\\)`).exec(out);
      let result;
      if (timedOut) result = { status: 'timeout', detail: `no result in ${timeoutS} s` };
      else if (skip) result = { status: 'skip', detail: skip[1] };
      else if (pass && code === 0) result = { status: 'pass' };
      else if (fail) result = { status: 'fail', detail: fail[1].trim() };
      else if (/ProcessLookupError/.test(out)) result = { status: 'fail', detail: 'the restored task was gone when zdtm stopped it (ProcessLookupError)' };
      else result = { status: 'error', detail: `zdtm.py exited ${code}: ${out.trim().split('\n').slice(-2).join(' | ').slice(0, 300)}` };
      const logs = collectLogs(testDir, item, out, logDir);
      if (result.status !== 'pass' && result.status !== 'skip' && item.impl !== 'stock') result.daemon = logs.daemonErrors;
      if (result.status !== 'pass' && result.status !== 'skip') {
        result.logs = logs.dir;
        // the test's own last words (its memory check, a crash of the restored task)
        const said = /Test output: =+\n([\s\S]*?) <<< =+/.exec(out)?.[1].trim().split('\n').slice(-3);
        if (said?.length && said[0]) result.output = said;
      }
      done({ ...item, ...result, seconds: s, at: new Date().toISOString() });
    });
  });
}

/** The run's logs (zdtm's output, CRIU's and the daemon's logs) into logDir; the dump goes. */
function collectLogs(testDir, item, out, logDir) {
  const dir = join(logDir, keyOf(item).replaceAll('|', '_').replaceAll('/', '_'));
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'zdtm.out'), out);
  const dumps = join(ROOT, testDir, 'dump', item.test);
  // What ours said before it had a log (bad arguments), as zdtm printed it.
  const daemonErrors = out.split('\n').filter((l) => /^postcopy: ERR_/.test(l)).slice(0, 2);
  const walk = (d, rel) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p, `${rel}${e.name}_`);
      else if (e.name.endsWith('.log') || e.name.endsWith('.cropt')) {
        cpSync(p, join(dir, `${rel}${e.name}`));
        if (e.name === 'lazy-pages.log') {
          const lines = readFileSync(p, 'utf8').split('\n').filter((l) => l.trim());
          const errors = lines.filter((l) => /Error|Warn|"level":(40|50|60)|ERR_|Uncaught|exception|ended with/i.test(l));
          // No error of its own: its last word (its report, or where it stopped).
          daemonErrors.push(...(errors.length ? errors : lines.slice(-1)).slice(0, 8).map((l) => l.slice(0, 400)));
        }
      }
    }
  };
  if (existsSync(dumps)) {
    walk(dumps, '');
    rmSync(dumps, { recursive: true, force: true });
  }
  return { dir, daemonErrors };
}

function loadResults(path, fresh) {
  if (fresh || !existsSync(path)) return { runs: {} };
  return JSON.parse(readFileSync(path, 'utf8'));
}

function saveJson(path, data) {
  writeFileSync(`${path}.tmp`, JSON.stringify(data, null, 1));
  renameSync(`${path}.tmp`, path);
}

const CELL = { pass: 'PASS', fail: 'FAIL', skip: 'skip', timeout: 'TIMEOUT', error: 'ERROR' };

/** The markdown table: totals per flavour and mode, then one row per test. */
export function table(runs, meta = {}) {
  const rs = Object.values(runs);
  const cols = [];
  for (const flavour of ['h', 'ns'])
    for (const mode of Object.keys(MODES))
      for (const impl of IMPLS) if (rs.some((r) => r.flavour === flavour && r.mode === mode && r.impl === impl)) cols.push({ flavour, mode, impl });
  const lines = [];
  if (meta.command) lines.push(`Command: \`${meta.command}\``, '');
  if (meta.criu) lines.push(`zdtm and criu: ${meta.criu}; ours: ${meta.ours ?? '?'}; ${meta.when ?? ''}`, '');
  const impls = IMPLS.filter((i) => cols.some((c) => c.impl === i));
  lines.push(`| flavour | zdtm mode | ${impls.map((i) => IMPL_TITLE[i]).join(' | ')} |`, `|---|---|${impls.map(() => '---|').join('')}`);
  for (const flavour of ['h', 'ns'])
    for (const mode of Object.keys(MODES)) {
      if (!cols.some((c) => c.flavour === flavour && c.mode === mode)) continue;
      const cells = impls.map((impl) => {
        const mine = rs.filter((r) => r.flavour === flavour && r.mode === mode && r.impl === impl && r.status !== 'skip');
        return mine.length ? `${mine.filter((r) => r.status === 'pass').length} / ${mine.length}` : '-';
      });
      lines.push(`| ${flavour === 'h' ? 'host' : 'ns'} | \`${MODES[mode]}\` | ${cells.join(' | ')} |`);
    }
  lines.push('', 'Counts leave out the tests zdtm itself skipped (a missing feature, its .checkskip).', '');
  lines.push(`| test | ${cols.map((c) => `${c.flavour} ${c.mode} ${IMPL_TITLE[c.impl]}`).join(' | ')} |`, `|---|${cols.map(() => '---|').join('')}`);
  const tests = [...new Set(rs.map((r) => r.test))].sort();
  for (const test of tests) {
    const cells = cols.map((c) => {
      const r = runs[keyOf({ ...c, test })];
      if (!r) return '';
      return r.status === 'pass' ? 'PASS' : `${CELL[r.status]}${r.detail ? ` (${r.detail.replaceAll('|', '/').slice(0, 60)})` : ''}`;
    });
    lines.push(`| ${test.replace(/^zdtm\//, '')} | ${cells.join(' | ')} |`);
  }
  // Ours failing where stock passes: what zdtm, the test and our daemon said.
  const bad = rs.filter((r) => r.impl !== 'stock' && !['pass', 'skip'].includes(r.status) && runs[keyOf({ ...r, impl: 'stock' })]?.status === 'pass');
  if (bad.length) {
    lines.push('', '### Where ours fails and stock passes', '');
    for (const r of bad.sort((a, b) => keyOf(a).localeCompare(keyOf(b)))) {
      const what = [`${r.status}${r.detail ? `: ${r.detail.slice(0, 200)}` : ''}`];
      if (r.output?.length) what.push(`test: ${r.output.join(' / ').slice(0, 200)}`);
      if (r.daemon?.length) what.push(`daemon: ${r.daemon.slice(0, 2).join(' / ').slice(0, 300)}`);
      lines.push(`- ${r.test.replace(/^zdtm\//, '')} (${r.flavour}, ${MODES[r.mode]}, ${IMPL_TITLE[r.impl]}): ${what.join('; ').replaceAll('`', "'")}`);
    }
  }
  return lines.join('\n') + '\n';
}

async function main() {
  const o = options(process.argv.slice(2));
  const testDir = prepare();
  const all = zdtmTests(testDir);
  const items = selection(o, all);
  if (o.list) {
    for (const i of items) console.log(keyOf(i));
    return;
  }
  mkdirSync(o.out, { recursive: true });
  // One harness per results directory: two would overwrite each other's results.
  const running = join(o.out, '.running');
  try {
    const other = Number(readFileSync(running, 'utf8'));
    process.kill(other, 0);
    throw new Error(`another npm run zdtm (pid ${other}) writes to ${o.out}`);
  } catch (err) {
    if (err.code !== 'ENOENT' && err.code !== 'ESRCH') throw err;
  }
  writeFileSync(running, String(process.pid));
  process.on('exit', () => rmSync(running, { force: true }));
  const resultsPath = join(o.out, 'results.json');
  const state = loadResults(resultsPath, o.fresh);
  const criu = spawnSync('bash', [CRIU_ROOT_SH, 'exec', 'criu', '--version'], { encoding: 'utf8', env: { ...process.env, POSTCOPY_CRIU_ROOT: ROOT } }).stdout.split('\n')[0].replace('Version: ', 'criu ');
  // ours: the last commit of the daemon's sources (and whether the build may hold more)
  const git = (...a) => spawnSync('git', ['-C', REPO, ...a], { encoding: 'utf8' }).stdout.trim();
  const src = 'packages/postcopy/src';
  const ours = `${git('log', '-1', '--format=%h %s', '--', src).slice(0, 80)}${git('status', '--porcelain', '--', src) ? ' (and uncommitted changes)' : ''}`;
  // One build of ours for the whole run (--live: the checkout's dist, as it is at each run).
  const snap = o.live ? null : snapshotOurs(join(o.out, 'ours'));
  state.meta = { command: `npm run zdtm -- ${process.argv.slice(2).join(' ')}`.trim(), criu, ours: `${ours}${snap ? `, built ${snap.builtAt}` : ', the live dist'}`, when: new Date().toISOString() };
  const todo = items.filter((i) => {
    const r = state.runs[keyOf(i)];
    return !r || (o.retry && !['pass', 'skip'].includes(r.status));
  });
  console.log(`zdtm: ${items.length} runs selected, ${items.length - todo.length} already have a result, ${todo.length} to run (${o.jobs} at a time, ${o.timeoutS} s each at most); results in ${o.out}`);
  const guard = sysctlGuard();
  const onSignal = (sig) => {
    guard.restore();
    saveJson(resultsPath, state);
    writeFileSync(join(o.out, 'table.md'), table(state.runs, state.meta));
    console.log(`zdtm: stopped by ${sig}; run it again to resume`);
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', () => guard.restore());
  // The runs of one test go one after the other (they share its files and dump directory in zdtm's tree).
  const groups = new Map();
  for (const i of todo) groups.set(i.test, [...(groups.get(i.test) ?? []), i]);
  const queue = [...groups.values()];
  let n = 0;
  let inFlight = 0;
  const worker = async () => {
    for (let g = queue.shift(); g; g = queue.shift())
      for (const item of g) {
        inFlight++;
        const r = await runOne(testDir, item, o.timeoutS, join(o.out, 'logs'), o.postcopyArgs, snap?.cli);
        // not under another run's feet: a hugetlb test sets vm.nr_hugepages for itself
        if (--inFlight === 0) guard.afterTest();
        state.runs[keyOf(item)] = r;
        n++;
        const daemon = r.daemon?.length ? ` — ${r.daemon[0].slice(0, 160)}` : '';
        console.log(`[${n}/${todo.length}] ${item.test} ${item.flavour} ${item.mode} ${item.impl}: ${r.status}${r.detail ? ` (${r.detail.slice(0, 100)})` : ''} ${r.seconds}s${daemon}`);
        saveJson(resultsPath, state);
        writeFileSync(join(o.out, 'table.md'), table(state.runs, state.meta));
      }
  };
  try {
    await Promise.all(Array.from({ length: o.jobs }, worker));
  } finally {
    guard.restore();
    saveJson(resultsPath, state);
    writeFileSync(join(o.out, 'table.md'), table(state.runs, state.meta));
    saveJson(join(o.out, 'table.json'), Object.values(state.runs));
  }
  console.log(`\n${table(Object.fromEntries(items.map((i) => [keyOf(i), state.runs[keyOf(i)]]).filter(([, r]) => r)))}`);
  console.log(`zdtm: table in ${join(o.out, 'table.md')} and table.json, logs of every run that did not pass in ${join(o.out, 'logs')}`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(`zdtm: ${err.message}`);
    process.exit(1);
  });
}
