import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { hashPages } from '../../src/util/pagehash.js';

export const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
export const FAULTER = fileURLToPath(new URL('./faulter.ts', import.meta.url));

/** Spawns a TypeScript entry under tsx; optional prefix runs it inside a namespace. */
export function spawnTs(script: string, args: string[], opts: { prefix?: string[]; fd3?: number } = {}): ChildProcess {
  const argv = [...(opts.prefix ?? []), process.execPath, '--import', 'tsx', script, ...args];
  const stdio: (string | number)[] = ['ignore', 'pipe', 'pipe'];
  if (opts.fd3 !== undefined) stdio.push(opts.fd3);
  return spawn(argv[0], argv.slice(1), { stdio: stdio as never, env: { ...process.env, POSTCOPY_LOG: process.env.POSTCOPY_LOG ?? 'info' } });
}

/** Collects JSON lines from a child's stdout; waits for one matching a predicate. */
export function jsonLines(child: ChildProcess) {
  const seen: Record<string, unknown>[] = [];
  const waiters: (() => void)[] = [];
  let stderr = '';
  child.stderr?.on('data', (d) => (stderr += d));
  createInterface({ input: child.stdout! }).on('line', (l) => {
    try {
      seen.push(JSON.parse(l));
    } catch {
      return;
    }
    waiters.splice(0).forEach((w) => w());
  });
  const exit = new Promise<number | string>((resolve) => child.on('exit', (c, s) => resolve(s ?? c ?? -1)));
  return {
    exit,
    stderr: () => stderr,
    async next(pred: (e: Record<string, unknown>) => boolean, timeoutMs = 30_000): Promise<Record<string, unknown>> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = seen.find(pred);
        if (hit) return hit;
        if (child.exitCode !== null || child.signalCode !== null) throw new Error(`child exited (${child.exitCode ?? child.signalCode}): ${stderr}`);
        if (Date.now() > deadline) throw new Error(`timed out; stderr: ${stderr}`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 50);
        });
      }
    },
  };
}

export function makeImage(path: string, bytes: number, zeroTailPages = 0, pageSize = 4096): Uint32Array {
  const data = randomBytes(bytes);
  if (zeroTailPages) data.fill(0, bytes - zeroTailPages * pageSize);
  writeFileSync(path, data);
  const hashes = new Uint32Array(bytes / pageSize);
  hashPages(data, pageSize, hashes);
  return hashes;
}

export function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
}

export function shQuiet(cmd: string, args: string[]): void {
  spawnSync(cmd, args, { stdio: 'ignore' });
}

/** Lines of a file once `enough` holds, or when the time is up (no file yet: no lines). */
export async function waitForLines(path: string, enough: (lines: string[]) => boolean, ms: number): Promise<string[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const lines = existsSync(path) ? readFileSync(path, 'utf8').trim().split('\n') : [];
    if (enough(lines) || Date.now() > deadline) return lines;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A process's state letter, or 'gone'. A killed task is gone, or a zombie nobody reaped yet. */
export function taskState(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return 'gone';
  }
}
