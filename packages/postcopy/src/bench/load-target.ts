// One target of `postcopy bench --load`, run as its own process in the targets' network namespace:
// it maps the source's region, hands it to the product's FaultHandler (faults, background push, its
// own key), reads every page, and checks each against the source's page hashes. Prints one JSON line.
import { readFileSync } from 'node:fs';
import { PostcopyError } from '../errors.js';
import { C, native } from '../native/index.js';
import { FaultHandler } from '../target/handler.js';
import { parseEndpoint } from '../transport/index.js';
import { hashPages } from '../util/pagehash.js';

export interface LoadTargetArgs {
  endpoint: string;
  keyId: string;
  /** hex */
  key: string;
  length: number;
  /** u32 per page, little-endian: what every page must hash to */
  hashes: string;
}

export interface LoadTargetReport {
  keyId: string;
  pages: number;
  faulted: number;
  pushed: number;
  zero: number;
  /** pages that read differently from the source (must be 0) */
  lost: number;
  corrupt: number;
  resumes: number;
  ms: number;
  /** wall clock (ms since the epoch) when the handler started and when every page was in */
  startedAt: number;
  endedAt: number;
  faultP50Us: number;
  faultP99Us: number;
  faults: number;
}

const PS = 4096;

async function main(a: LoadTargetArgs): Promise<void> {
  const pages = a.length / PS;
  const addr = native.mmapAnon(a.length);
  const uffd = native.uffdOpen(true);
  native.uffdApi(uffd, 0n);
  native.uffdRegister(uffd, addr, a.length, C.UFFDIO_REGISTER_MODE_MISSING);
  const t0 = performance.now();
  const startedAt = Date.now();
  const handler = await FaultHandler.start({
    endpoint: parseEndpoint(a.endpoint),
    uffd,
    mappings: [{ regionId: 0, localStart: addr, length: a.length }],
    key: { keyId: a.keyId, key: Buffer.from(a.key, 'hex') },
    targetPid: process.pid, // on a fatal error: never run on pages that did not arrive
  });
  // Read every page while the push runs: the ones not there yet fault.
  native.touchPages(addr, pages, PS, false);
  const got = new Uint32Array(pages);
  hashPages(new Uint8Array(native.viewMemory(addr, a.length)), PS, got);
  const report = await handler.done();
  const ms = performance.now() - t0;
  const endedAt = Date.now();
  const expected = new Uint32Array(new Uint8Array(readFileSync(a.hashes)).buffer);
  let lost = 0;
  for (let p = 0; p < pages; p++) if (got[p] !== expected[p]) lost++;
  const out: LoadTargetReport = {
    keyId: a.keyId,
    pages: report.pages,
    faulted: report.faulted,
    pushed: report.pushed,
    zero: report.zero,
    lost,
    corrupt: report.corrupt,
    resumes: report.resumes,
    ms: Math.round(ms * 10) / 10,
    startedAt,
    endedAt,
    faultP50Us: Math.round((report.latency?.p50Ns ?? 0) / 100) / 10,
    faultP99Us: Math.round((report.latency?.p99Ns ?? 0) / 100) / 10,
    faults: report.latency?.count ?? 0,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main(JSON.parse(process.argv[2] ?? '{}') as LoadTargetArgs).catch((err: PostcopyError) => {
  process.stderr.write(`load target: ${err.code ?? 'ERR'}: ${err.message}\n`);
  process.exit(1);
});
