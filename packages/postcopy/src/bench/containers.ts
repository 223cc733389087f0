// runc containers for tests and benchmarks, inside the CRIU root: a bundle whose root filesystem is the root's own
// files hard-linked (no copy: the same image "unpacked" on every host of the test), started in a
// host's network namespace and cgroup namespace.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inRuncRoot, parseRuncState, runc, type ContainerState } from '../criu/runc.js';
import { criuRootDir, inCriuRoot } from '../criu/root.js';


function run(argv: string[], what: string): string {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) throw new Error(`${what}: ${r.stderr || r.stdout || r.error?.message}`);
  return r.stdout;
}

/**
 * A bundle at `bundle` (a path inside the CRIU root) running `args`, with each of `binds` (paths
 * inside the root) bind-mounted at the same path in the container.
 */
export function makeBundle(bundle: string, args: string[], binds: string[] = []): void {
  const root = criuRootDir();
  const host = join(root, bundle);
  rmSync(host, { recursive: true, force: true });
  const rootfs = join(host, 'rootfs');
  mkdirSync(rootfs, { recursive: true });
  run(['cp', '-al', join(root, 'usr'), join(rootfs, 'usr')], 'hard-linking the root filesystem');
  run(['cp', '-a', join(root, 'etc'), join(rootfs, 'etc')], 'copying /etc');
  for (const l of ['bin', 'sbin', 'lib', 'lib64']) symlinkSync(`usr/${l}`, join(rootfs, l));
  for (const d of ['proc', 'sys', 'dev', 'tmp', 'run', 'var/lib', 'var/log', 'var/tmp', ...binds.map((b) => b.slice(1))]) mkdirSync(join(rootfs, d), { recursive: true });
  run(inCriuRoot(['runc', 'spec', '--bundle', bundle]), 'runc spec');
  const config = JSON.parse(readFileSync(join(host, 'config.json'), 'utf8'));
  config.process.terminal = false;
  config.process.args = args;
  config.root = { path: 'rootfs', readonly: false };
  config.hostname = 'migrated';
  for (const b of binds) config.mounts.push({ destination: b, type: 'bind', source: b, options: ['rbind', 'rw'] });
  writeFileSync(join(host, 'config.json'), JSON.stringify(config, null, 2));
}

/** Starts container id from bundle in a host's runc root (and its network namespace: prefix). */
export function startContainer(host: string, runcRoot: string, bundle: string, id: string, prefix: string[] = []): void {
  run([...prefix, ...inRuncRoot(host, runc(runcRoot, ['run', '-d', '--bundle', bundle, id]))], `runc run ${id}`);
}

/** The environment of a host whose CRIU root is criuRoot (a test's second host may have its own). */
const envOf = (criuRoot?: string) => (criuRoot ? { ...process.env, POSTCOPY_CRIU_ROOT: criuRoot } : process.env);

/** `runc state` of a container, or null if that runc root has none by that id. */
export function containerStatus(host: string, runcRoot: string, id: string, criuRoot?: string): ContainerState | null {
  const argv = inRuncRoot(host, runc(runcRoot, ['state', id]));
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: 30_000, env: envOf(criuRoot) });
  return parseRuncState(id, r);
}

/** Removes a container (killed first) from a runc root; quiet if it is not there. */
export function removeContainer(host: string, runcRoot: string, id: string, criuRoot?: string): void {
  const argv = inRuncRoot(host, runc(runcRoot, ['delete', '-f', id]));
  spawnSync(argv[0], argv.slice(1), { stdio: 'ignore', timeout: 30_000, env: envOf(criuRoot) });
}

/** A command's output lines, run in a CRIU root (this host's, or criuRoot). */
export function inRootSync(command: string, criuRoot?: string): string[] {
  const argv = inCriuRoot(['/bin/bash', '-c', command]);
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: 120_000, env: envOf(criuRoot) });
  if (r.status !== 0) throw new Error(`${command}: ${r.stderr || r.error?.message}`);
  return r.stdout.trim().split('\n');
}
