// Where CRIU runs: a Debian trixie root (criu 4.x) built by scripts/criu-root.sh on first use.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PostcopyError } from '../errors.js';

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CRIU_ROOT_SCRIPT = join(packageRoot, 'scripts', 'criu-root.sh');

/**
 * CRIU stops a task at the end of its parasite and restorer code with a hardware breakpoint. In
 * some VMs (this one: kernel 6.18, AMD EPYC under Firecracker) debug registers take the breakpoint
 * but it never fires, and `criu dump` waits in wait4 for ever. Fault-injection switch 130
 * (FI_NO_BREAKPOINTS) makes CRIU step to that point with PTRACE_SYSCALL instead, as it does where
 * breakpoints are missing: a few syscall stops more, everywhere correct. Set for every CRIU run
 * started from this process (some enter the task's mounts with nsenter, not criu-root.sh).
 */
process.env.CRIU_FAULT ??= '130';

export const MANAGED_ROOT = '/var/cache/postcopy/trixie';

/** What a `criu --version`, `criu check` and `runc --version` said (null: not there). */
export interface ToolProbe {
  criuVersion: string | null;
  criuCheck: string | null;
  runcVersion: string | null;
}

export interface ToolChoice {
  /** '/': the host's own criu and runc; otherwise the managed root */
  root: string;
  reason: string;
}

const versionAtLeast = (v: string, major: number, minor: number) => {
  const m = /^(\d+)\.(\d+)/.exec(v);
  return !!m && (Number(m[1]) > major || (Number(m[1]) === major && Number(m[2]) >= minor));
};

/**
 * Which CRIU and runc to use: the host's when its criu is 4.0 or newer, `criu check` passes and
 * runc 1.1 or newer is there; the managed trixie root otherwise (Debian 12 has criu 3.17, which
 * cannot dump on kernels 6.x). POSTCOPY_CRIU_ROOT names one outright ('/' for the host's).
 */
export function chooseTools(host: ToolProbe, env: string | undefined = process.env.POSTCOPY_CRIU_ROOT): ToolChoice {
  if (env) return { root: env, reason: 'POSTCOPY_CRIU_ROOT says so' };
  const fallback = (why: string) => ({ root: MANAGED_ROOT, reason: `the managed root, since ${why}` });
  if (!host.criuVersion) return fallback('this host has no criu');
  if (!versionAtLeast(host.criuVersion, 4, 0)) return fallback(`this host's criu ${host.criuVersion} is older than 4.0`);
  if (host.criuCheck !== 'Looks good.') return fallback(`\`criu check\` fails here: ${host.criuCheck ?? 'no answer'}`);
  if (!host.runcVersion) return fallback('this host has no runc');
  if (!versionAtLeast(host.runcVersion, 1, 1)) return fallback(`this host's runc ${host.runcVersion} is older than 1.1`);
  return { root: '/', reason: `this host's criu ${host.criuVersion} (criu check: Looks good.) and runc ${host.runcVersion}` };
}

/** The host's own criu and runc, as they answer (bounded: a few seconds at most). */
export function probeHostTools(): ToolProbe {
  const ask = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 20_000, env: { ...process.env, CRIU_FAULT: undefined } });
    return r.error ? null : `${r.stdout}${r.stderr}`.trim();
  };
  const criu = ask('criu', ['--version']);
  const criuVersion = criu === null ? null : (/Version:\s*(\S+)/.exec(criu)?.[1] ?? null);
  const criuCheck = criuVersion ? (ask('criu', ['check'])?.split('\n').pop() ?? null) : null;
  const runc = ask('runc', ['--version']);
  const runcVersion = runc === null ? null : (/runc version\s*(\S+)/.exec(runc)?.[1] ?? null);
  return { criuVersion, criuCheck, runcVersion };
}

let chosen: ToolChoice | null = null;

/** The tools this process uses, chosen once. */
export function toolChoice(): ToolChoice {
  if (!chosen) {
    chosen = chooseTools(process.env.POSTCOPY_CRIU_ROOT ? { criuVersion: null, criuCheck: null, runcVersion: null } : probeHostTools());
    // Children (criu-root.sh, the CLI under a bench) use the same tools.
    process.env.POSTCOPY_CRIU_ROOT = chosen.root;
  }
  return chosen;
}

/** The root CRIU and runc run in: '/' for the host's own, else the managed trixie root. */
export function criuRootDir(): string {
  return toolChoice().root;
}

/** Builds the root if it is missing (about a minute, once; needs Debian's mirror), and our workloads in it. */
export function ensureCriuRoot(): string {
  if (criuRootDir() === '/') return '/';
  const r = spawnSync('bash', [CRIU_ROOT_SCRIPT, 'ensure'], { encoding: 'utf8', timeout: 900_000, env: { ...process.env, POSTCOPY_CRIU_ROOT: criuRootDir() } });
  if (r.status !== 0) throw new PostcopyError(/needs root/.test(r.stderr) ? 'ERR_PRIVILEGE' : 'ERR_CRIU', `cannot set up CRIU: ${r.stderr.trim().split('\n').slice(-3).join(' ')}`);
  return r.stdout.trim();
}

/** argv that runs a command inside the root (private mount namespace, pivot_root). */
export function inCriuRoot(argv: string[]): string[] {
  return ['bash', CRIU_ROOT_SCRIPT, 'exec', ...argv];
}

/** Whether CRIU is usable, without building anything. */
export function criuStatus(): { ok: boolean; detail: string } {
  const root = criuRootDir();
  if (root === '/') return { ok: true, detail: toolChoice().reason };
  if (!existsSync(join(root, '.postcopy-root-ok'))) return { ok: false, detail: `not set up yet: \`postcopy criu-setup\` builds ${root} (it is also built on first use)` };
  const r = spawnSync('bash', [CRIU_ROOT_SCRIPT, 'exec', 'sh', '-c', 'criu --version | head -1; runc --version 2>/dev/null | head -1 || echo "no runc"; criu check 2>&1 | tail -1'], { encoding: 'utf8', timeout: 30_000 });
  const [version, runc, check] = r.stdout.trim().split('\n');
  if (r.status !== 0 || check !== 'Looks good.') return { ok: false, detail: `${root}: ${(r.stderr || r.stdout).trim().split('\n').pop()}` };
  return { ok: true, detail: `${version?.replace('Version: ', 'criu ')} and ${runc?.replace('runc version ', 'runc ') ?? 'no runc'} in ${root}: ${check}` };
}

/**
 * Runs fn with fs.pipe-max-size at least 4 MiB, then puts it back. CRIU's lazy page server asks
 * for 4 MiB pipes and, without CAP_SYS_RESOURCE (this VM's root lacks it), fails with
 * "page-pipe: splice: Bad file descriptor" when the limit is lower.
 */
export async function withPipeSize<T>(fn: () => Promise<T>): Promise<T> {
  const path = '/proc/sys/fs/pipe-max-size';
  const before = readFileSync(path, 'utf8').trim();
  if (Number(before) < 4 << 20) writeFileSync(path, String(4 << 20));
  try {
    return await fn();
  } finally {
    if (Number(before) < 4 << 20) writeFileSync(path, before);
  }
}

/**
 * CRIU before 4.2 cannot dump a TCP or UDP socket on kernels 6.16 and newer ("Can't get 1:16 opt"):
 * what doctor says of it, or null when it does not apply.
 */
export function inetNote(kernel: string, criuVersion: string | null): string | null {
  const k = /^(\d+)\.(\d+)/.exec(kernel);
  if (!k || Number(k[1]) < 6 || (Number(k[1]) === 6 && Number(k[2]) < 16)) return null;
  const v = criuVersion ? /^(\d+)\.(\d+)/.exec(criuVersion) : null;
  if (v && (Number(v[1]) > 4 || (Number(v[1]) === 4 && Number(v[2]) >= 2))) return null;
  return `criu ${criuVersion ?? '?'} cannot dump TCP or UDP sockets on kernel ${kernel} (it needs 4.2: Debian forky and sid have 4.2.1; POSTCOPY_CRIU_SUITE=sid builds the root from sid). Tasks without them migrate.`;
}
