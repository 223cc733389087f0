// The target side of `postcopy bench`, run as its own process (so it can be pinned and put in a
// network namespace): the product's FaultHandler resolves every fault; this thread only touches.
// Prints one JSON line per trial, {trial, ns: [...]}, the same shape as the C reference, and
// takes batches the same way: trials 0 reads a count per stdin line and ends each with "batch done".
import { createInterface } from 'node:readline';
import { PostcopyError } from '../errors.js';
import { C, native } from '../native/index.js';
import { FaultHandler } from '../target/handler.js';
import { probeSource } from '../target/probe.js';
import { parseEndpoint } from '../transport/index.js';

export interface BenchTargetArgs {
  endpoint: string;
  pageSize: number;
  faults: number;
  /** all trials at once (warm-up included), or 0: batches from stdin */
  trials: number;
}

async function main(args: BenchTargetArgs): Promise<void> {
  const endpoint = parseEndpoint(args.endpoint);
  const regions = await probeSource(endpoint, args.pageSize);
  const length = args.faults * args.pageSize;
  if (!regions[0] || regions[0].length < length)
    throw new PostcopyError('ERR_OUT_OF_RANGE', `the source's region 0 is smaller than ${args.faults} pages of ${args.pageSize}`);
  // The mapping covers the whole source region, which is larger than what a trial touches, so
  // the handler never sees "every page present" and keeps serving between trials.
  const mapped = regions[0].length;
  const raw = native.mmapAnon(mapped + args.pageSize);
  const local = Math.ceil(raw / args.pageSize) * args.pageSize;
  const uffd = native.uffdOpen(true);
  native.uffdApi(uffd, 0n);
  native.uffdRegister(uffd, local, mapped, C.UFFDIO_REGISTER_MODE_MISSING);
  const handler = await FaultHandler.start({ endpoint, uffd, mappings: [{ regionId: 0, localStart: local, length: mapped }], pageSize: args.pageSize, push: false });
  const ns = new Float64Array(args.faults);
  let trial = 0;
  const run = (count: number) => {
    for (let k = 0; k < count; k++, trial++) {
      native.touchPages(local, args.faults, args.pageSize, true, ns);
      process.stdout.write(`${JSON.stringify({ trial, ns: Array.from(ns, Math.round) })}\n`);
      handler.evict(0, 0, args.faults);
    }
  };
  try {
    if (args.trials > 0) run(args.trials);
    else
      for await (const line of createInterface({ input: process.stdin })) {
        run(Number(line));
        process.stdout.write('batch done\n');
      }
  } finally {
    const report = await handler.stop();
    process.stdout.write(`${JSON.stringify({ handler: report })}\n`);
  }
}

main(JSON.parse(process.argv[2] ?? '{}') as BenchTargetArgs).catch((err: PostcopyError) => {
  process.stderr.write(`bench target: ${err.code ?? 'ERR'}: ${err.message}\n`);
  process.exit(1);
});
