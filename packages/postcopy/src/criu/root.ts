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

export function criuRootDir(): string {
  return process.env.POSTCOPY_CRIU_ROOT ?? '/var/cache/postcopy/trixie';
}

/** Builds the root if it is missing (about a minute, once; needs Debian's mirror), and our workloads in it. */
export function ensureCriuRoot(): string {
  const r = spawnSync('bash', [CRIU_ROOT_SCRIPT, 'ensure'], { encoding: 'utf8', timeout: 900_000 });
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
  if (!existsSync(join(root, '.postcopy-root-ok'))) return { ok: false, detail: `not set up yet: \`postcopy criu-setup\` builds ${root} (it is also built on first use)` };
  const r = spawnSync('bash', [CRIU_ROOT_SCRIPT, 'exec', 'sh', '-c', 'criu --version | head -1; criu check 2>&1 | tail -1'], { encoding: 'utf8', timeout: 30_000 });
  const [version, check] = r.stdout.trim().split('\n');
  if (r.status !== 0 || check !== 'Looks good.') return { ok: false, detail: `${root}: ${(r.stderr || r.stdout).trim().split('\n').pop()}` };
  return { ok: true, detail: `${version?.replace('Version: ', 'criu ')} in ${root}: ${check}` };
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
