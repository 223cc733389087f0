// runc, run inside the CRIU root (trixie's runc 1.1 drives trixie's CRIU 4.1 through `criu swrk`).
// A container's state lives in a runc root of its own per host (`--root`): the CRIU root's /run is
// new on every entry, so the default /run/runc would not outlive the command. runc needs a cgroup
// hierarchy: the root is entered with the host's cgroup v2 one bound in (POSTCOPY_ROOT_CGROUPS).
// What changes against a plain CRIU dump: runc calls CRIU over RPC with --image-path for the images
// and --work-path for the logs and for lazy-pages.socket (CRIU chdirs to its work directory and
// connects to the socket there); the dump names tasks by their pids in the container's namespace.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PostcopyError } from '../errors.js';
import { CRIU_ROOT_SCRIPT, criuRootDir } from './root.js';

/**
 * argv that runs a command in the CRIU root with the cgroup hierarchy runc needs: a cgroup
 * namespace of this host's own (criu-root.sh, POSTCOPY_ROOT_CGROUPS), so that two hosts on one
 * kernel keep their containers' cgroups apart.
 */
export function inRuncRoot(host: string, argv: string[]): string[] {
  return ['env', `POSTCOPY_ROOT_CGROUPS=${host}`, 'bash', CRIU_ROOT_SCRIPT, 'exec', ...argv];
}

export const runc = (root: string, args: string[]) => ['runc', '--root', root, ...args];

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const PATH_IN_ROOT = /^\/[A-Za-z0-9._+@%=,:/-]*$/;

export interface ContainerState {
  id: string;
  /** the container's init, as this host sees it */
  pid: number;
  status: string;
  /** the bundle's path, as runc in the CRIU root sees it */
  bundle: string;
}

export function checkContainerId(id: string): void {
  if (!CONTAINER_ID.test(id)) throw new PostcopyError('ERR_INVALID_ARG', `container id ${JSON.stringify(id)}: letters, digits, '_', '.' and '-' (runc's rule)`);
}

export function checkPathInRoot(what: string, path: string): void {
  if (!PATH_IN_ROOT.test(path) || path.split('/').includes('..')) throw new PostcopyError('ERR_INVALID_ARG', `${what} ${JSON.stringify(path)}: an absolute path inside the CRIU root (letters, digits and ._+@%=,:/- only, no ..)`);
}

export interface RuncRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * runc with these arguments in a host's runc root, run to its end without blocking the event loop
 * (an agent serves other migrations meanwhile). env: a host with a CRIU root of its own (tests).
 */
export function runRunc(host: string, root: string, args: string[], timeoutMs = 30_000, env: NodeJS.ProcessEnv = process.env): Promise<RuncRun> {
  const argv = inRuncRoot(host, runc(root, args));
  return new Promise((resolve) => {
    execFile(argv[0], argv.slice(1), { encoding: 'utf8', timeout: timeoutMs, env }, (err, stdout, stderr) => {
      const status = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null) : 0;
      resolve({ status, stdout, stderr: stderr || (err && status === null ? err.message : '') });
    });
  });
}

/** What `runc state` said, or null when the runc root has no such container. */
export function parseRuncState(id: string, r: RuncRun): ContainerState | null {
  if (r.status !== 0) return null;
  try {
    return JSON.parse(r.stdout) as ContainerState;
  } catch {
    throw new PostcopyError('ERR_CRIU', `runc state ${id} said no JSON: ${r.stdout.slice(0, 200)}`);
  }
}

/** `runc state ID`: the container must exist and run. */
export async function containerState(host: string, root: string, id: string): Promise<ContainerState> {
  checkContainerId(id);
  checkPathInRoot('--runc-root', root);
  const r = await runRunc(host, root, ['state', id]);
  const state = parseRuncState(id, r);
  if (!state) throw new PostcopyError('ERR_INVALID_ARG', `no container ${id} in runc root ${root}: ${(r.stderr || r.stdout).trim().split('\n').pop()}`);
  if (state.status !== 'running') throw new PostcopyError('ERR_INVALID_ARG', `container ${id} is ${state.status}, not running`);
  if (!(state.pid > 1)) throw new PostcopyError('ERR_CRIU', `runc state ${id} gives no pid`);
  return state;
}

/** The container's cgroup v2 directory as runc in the CRIU root sees it (its state.json there), or null. */
export function containerCgroup(root: string, id: string): string | null {
  try {
    const state = JSON.parse(readFileSync(join(criuRootDir(), root, id, 'state.json'), 'utf8')) as { cgroup_paths?: Record<string, string> };
    const path = state.cgroup_paths?.[''];
    return path && PATH_IN_ROOT.test(path) && !path.split('/').includes('..') ? path : null;
  } catch {
    return null;
  }
}

/**
 * Shell (in the CRIU root) that freezes cgroup `cg` and waits until the kernel says it is frozen,
 * at most ~2 s; it fails (the cgroup thawed again) otherwise. CRIU freezes a running container's
 * cgroup itself but, unless it froze at once, looks again only 100 ms later (criu/seize.c,
 * step_ms); one frozen already it takes as it is. CRIU then holds the tasks by ptrace and thaws
 * the cgroup; a dump that fails freezes it again (as CRIU found it), so the caller thaws it then.
 */
export const freezeCgroupShell = (cg: string) =>
  `( echo 1 > ${cg}/cgroup.freeze || exit 1; i=0; until grep -qx 'frozen 1' ${cg}/cgroup.events; do i=$((i+1)); [ $i -lt 2000 ] || { ${thawCgroupShell(cg)}; exit 1; }; [ $i -lt 50 ] || sleep 0.001; done )`;

export const thawCgroupShell = (cg: string) => `echo 0 > ${cg}/cgroup.freeze 2>/dev/null`;

/** Thaws a container's cgroup (after a failed dump that left it frozen); false if that failed. */
export async function thawContainer(host: string, cg: string, timeoutMs = 10_000): Promise<boolean> {
  const argv = inRuncRoot(host, ['sh', '-c', thawCgroupShell(cg)]);
  return new Promise((resolve) => execFile(argv[0], argv.slice(1), { timeout: timeoutMs }, (err) => resolve(!err)));
}

/** A bundle as runc in the CRIU root would use it: config.json and its root filesystem there. */
export function checkBundle(bundle: string): void {
  checkPathInRoot('bundle', bundle);
  const host = join(criuRootDir(), bundle);
  const config = join(host, 'config.json');
  if (!existsSync(config)) throw new PostcopyError('ERR_INVALID_ARG', `no bundle at ${bundle} on this host (no config.json): it must exist at the same path on both hosts (shared storage, or the same image unpacked)`);
  let rootPath: string;
  try {
    rootPath = (JSON.parse(readFileSync(config, 'utf8')) as { root?: { path?: string } }).root?.path ?? 'rootfs';
  } catch (err) {
    throw new PostcopyError('ERR_INVALID_ARG', `bundle ${bundle}: config.json is not JSON: ${(err as Error).message}`);
  }
  const rootfs = rootPath.startsWith('/') ? join(criuRootDir(), rootPath) : join(host, rootPath);
  if (!existsSync(rootfs)) throw new PostcopyError('ERR_INVALID_ARG', `bundle ${bundle}: its root filesystem ${rootPath} is missing on this host`);
}
