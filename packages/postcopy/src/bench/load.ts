// `postcopy bench --load N`: one source serves N targets at once, each a process migrating the same
// 64 MiB region with a key of its own, the source and the targets in two network namespaces joined
// by a veth pair. Reports pages/s, each target's fault p99, and pages lost (must be 0).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PostcopyError } from '../errors.js';
import { cleanupOnSignal, LineChild, nodeModuleArgv } from '../util/child.js';
import { VethPair } from '../util/netns.js';
import { hashPages } from '../util/pagehash.js';
import type { LoadTargetArgs, LoadTargetReport } from './load-target.js';

export interface LoadOptions {
  targets: number;
  /** MiB per target */
  mib: number;
  mtu?: number;
  timeoutMs?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface LoadResult {
  targets: number;
  mib: number;
  mtu: number;
  /** from the first target's start to the last target's last page */
  seconds: number;
  pagesPerSecond: number;
  mibPerSecond: number;
  /** pages that read differently on a target than on the source, all targets (must be 0) */
  lost: number;
  faultP99Us: { median: number; max: number };
  perTarget: LoadTargetReport[];
}

const PS = 4096;

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  if (!(o.targets >= 1 && o.targets <= 256)) throw new PostcopyError('ERR_INVALID_ARG', `--load takes 1 to 256 targets, not ${o.targets}`);
  if (!(o.mib >= 1)) throw new PostcopyError('ERR_INVALID_ARG', `--load-mib must be at least 1, not ${o.mib}`);
  const timeoutMs = o.timeoutMs ?? 600_000;
  const mtu = o.mtu ?? 9000;
  const dir = mkdtempSync(join(tmpdir(), 'pc-load-'));
  const children: LineChild[] = [];
  let veth: VethPair | null = null;
  const cleanup = () => {
    for (const c of children) c.kill();
    veth?.destroy();
    veth = null;
    rmSync(dir, { recursive: true, force: true });
  };
  const stopWatching = cleanupOnSignal(cleanup);
  try {
    // What every target must end up with, and a key for each.
    const image = randomBytes(o.mib << 20);
    const hashes = new Uint32Array(image.length / PS);
    hashPages(image, PS, hashes);
    writeFileSync(join(dir, 'image'), image);
    writeFileSync(join(dir, 'hashes'), new Uint8Array(hashes.buffer));
    const keys = Array.from({ length: o.targets }, (_, i) => ({ keyId: `target-${i}`, key: randomBytes(32).toString('hex'), regions: [{ region: 0 }] }));
    writeFileSync(join(dir, 'grants.json'), JSON.stringify(keys), { mode: 0o600 });

    veth = VethPair.create(`pcl${process.pid % 100000}`, '10.234.0', mtu);
    const cli = nodeModuleArgv(import.meta.url, '../cli/main');
    const serve = new LineChild('postcopy serve', [...veth.exec('a'), ...cli, 'serve', '--image', join(dir, 'image'), '--listen', `tcp://${veth.a.addr}:0`, '--grants', join(dir, 'grants.json'), '--json']);
    children.push(serve);
    const endpoint = (await serve.event('serve', 'listening', 60_000)).endpoint;

    const script = nodeModuleArgv(import.meta.url, './load-target');
    let done = 0;
    const reports = await Promise.all(
      keys.map(async (k) => {
        const args: LoadTargetArgs = { endpoint, keyId: k.keyId, key: k.key, length: image.length, hashes: join(dir, 'hashes') };
        const target = new LineChild(k.keyId, [...veth!.exec('b'), ...script, JSON.stringify(args)]);
        children.push(target);
        const lines = await target.rest(timeoutMs);
        o.onProgress?.(++done, o.targets);
        const line = lines.find((l) => l.startsWith('{'));
        if (!line) throw new PostcopyError('ERR_CHILD', `${k.keyId} reported nothing`);
        return JSON.parse(line) as LoadTargetReport;
      }),
    );
    const seconds = (Math.max(...reports.map((r) => r.endedAt)) - Math.min(...reports.map((r) => r.startedAt))) / 1000;
    const pages = reports.reduce((n, r) => n + r.pages, 0);
    const p99s = reports.map((r) => r.faultP99Us).sort((a, b) => a - b);
    return {
      targets: o.targets,
      mib: o.mib,
      mtu,
      seconds: Math.round(seconds * 1000) / 1000,
      pagesPerSecond: Math.round(pages / seconds),
      mibPerSecond: Math.round(((pages * PS) / (1 << 20) / seconds) * 10) / 10,
      lost: reports.reduce((n, r) => n + r.lost, 0),
      faultP99Us: { median: p99s[Math.floor((p99s.length - 1) / 2)], max: p99s[p99s.length - 1] },
      perTarget: reports,
    };
  } finally {
    stopWatching();
    cleanup();
  }
}

export function formatLoadReport(r: LoadResult): string {
  const rows = r.perTarget.map((t) => `| ${t.keyId} | ${t.pages} | ${t.faulted} | ${t.pushed} | ${t.ms} | ${t.faultP50Us} | ${t.faultP99Us} | ${t.lost} |`);
  return [
    `One source, ${r.targets} targets of ${r.mib} MiB each, veth MTU ${r.mtu}: ${r.pagesPerSecond} pages/s (${r.mibPerSecond} MiB/s) over ${r.seconds} s; pages lost ${r.lost}; fault p99 median ${r.faultP99Us.median} µs, max ${r.faultP99Us.max} µs.`,
    '',
    '| target | pages | faulted | pushed | ms | fault p50 µs | fault p99 µs | lost |',
    '|---|---|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
}
