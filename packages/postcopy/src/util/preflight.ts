// What this machine lets postcopy do, and exactly what is missing when it cannot.
import { existsSync, readFileSync } from 'node:fs';
import { PrivilegeError } from '../errors.js';
import { native } from '../native/index.js';
import { criuStatus } from '../criu/root.js';

export interface Capabilities {
  root: boolean;
  uffd: { ok: boolean; detail: string; features?: string[] };
  processVmReadv: { ok: boolean; detail: string };
  netns: { ok: boolean; detail: string };
  criu: { ok: boolean; detail: string };
  kernel: string;
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

const FEATURE_NAMES: [string, number][] = [
  ['EVENT_FORK', 1 << 1],
  ['EVENT_REMAP', 1 << 2],
  ['EVENT_REMOVE', 1 << 3],
  ['MISSING_HUGETLBFS', 1 << 4],
  ['MISSING_SHMEM', 1 << 5],
  ['EVENT_UNMAP', 1 << 6],
  ['SIGBUS', 1 << 7],
  ['THREAD_ID', 1 << 8],
  ['MINOR_HUGETLBFS', 1 << 9],
  ['MINOR_SHMEM', 1 << 10],
  ['EXACT_ADDRESS', 1 << 11],
  ['WP_HUGETLBFS_SHMEM', 1 << 12],
  ['WP_UNPOPULATED', 1 << 13],
  ['POISON', 1 << 14],
  ['WP_ASYNC', 1 << 15],
  ['MOVE', 1 << 16],
];

export function probeUffd(): Capabilities['uffd'] {
  let fd = -1;
  try {
    fd = native.uffdOpen(true);
    const api = native.uffdApi(fd, 0n);
    const features = FEATURE_NAMES.filter(([, bit]) => (api.features & BigInt(bit)) !== 0n).map(([n]) => n);
    return { ok: true, detail: 'userfaultfd works', features };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const sysctl = readText('/proc/sys/vm/unprivileged_userfaultfd');
    const hint =
      e.code === 'EPERM'
        ? `userfaultfd needs CAP_SYS_PTRACE (run as root), access to /dev/userfaultfd, or vm.unprivileged_userfaultfd=1 (now ${sysctl ?? 'unknown'})`
        : e.code === 'ENOSYS'
          ? 'this kernel has no userfaultfd (CONFIG_USERFAULTFD is off)'
          : e.message;
    return { ok: false, detail: hint };
  } finally {
    if (fd >= 0) native.close(fd);
  }
}

export function probeCapabilities(options: { criu?: boolean } = {}): Capabilities {
  const root = process.getuid?.() === 0;
  const ptraceScope = readText('/proc/sys/kernel/yama/ptrace_scope');
  const pvr = root
    ? { ok: true, detail: 'root may read any process' }
    : ptraceScope === null || ptraceScope === '0'
      ? { ok: true, detail: 'same-uid processes are readable' }
      : { ok: false, detail: `kernel.yama.ptrace_scope=${ptraceScope}: reading another process's memory needs root or CAP_SYS_PTRACE` };
  const netns = root && existsSync('/usr/sbin/ip') || existsSync('/sbin/ip') || existsSync('/usr/bin/ip')
    ? { ok: root, detail: root ? 'ip netns and veth available' : 'network namespaces need root' }
    : { ok: false, detail: 'iproute2 (ip) is not installed' };
  const criu = options.criu === false ? { ok: false, detail: 'not checked' } : criuStatus();
  return { root, uffd: probeUffd(), processVmReadv: pvr, netns, criu, kernel: readText('/proc/sys/kernel/osrelease') ?? 'unknown' };
}

/** Throws PrivilegeError naming each missing piece the demo needs, and nothing else. */
export function requireDemoCapabilities(): void {
  const caps = probeCapabilities({ criu: false });
  const missing: string[] = [];
  if (!caps.uffd.ok) missing.push(caps.uffd.detail);
  if (!caps.processVmReadv.ok) missing.push(caps.processVmReadv.detail);
  if (missing.length) throw new PrivilegeError(missing.join('; '));
}
