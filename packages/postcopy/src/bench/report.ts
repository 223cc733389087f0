// The bench's tables, in Markdown: rows transport x page size like the report's Table 4,
// columns link/MTU; then the ratios to the C reference and the breakdown (its Figure 2).
import type { BenchResult, CaseResult } from './bench.js';
import type { Summary } from './stats.js';

export const columnOf = (c: Pick<CaseResult, 'link' | 'mtu'>): string => (c.link === 'veth' ? `veth MTU ${c.mtu}` : 'loopback');
export const rowOf = (c: Pick<CaseResult, 'transport' | 'pageSize'>): string => `${c.transport.toUpperCase()} ${c.pageSize / 1024} KiB`;

const cell = (s: Summary) => `${s.mean.toFixed(1)} ± ${s.sd.toFixed(1)} (p50 ${s.p50.toFixed(1)}, p99 ${s.p99.toFixed(1)})`;

function grid(result: BenchResult, head: string, body: (c: CaseResult) => string): string {
  const columns = [...new Set(result.cases.map(columnOf))];
  const rows = [...new Set(result.cases.map(rowOf))];
  const lines = [`| ${head} | ${columns.join(' | ')} |`, `|---|${columns.map(() => '---').join('|')}|`];
  for (const row of rows) {
    const cells = columns.map((col) => {
      const c = result.cases.find((x) => rowOf(x) === row && columnOf(x) === col);
      return c ? body(c) : '–';
    });
    lines.push(`| ${row} | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

export function formatReport(result: BenchResult): string {
  const m = result.machine;
  const out: string[] = [];
  out.push(
    `Remote page fault, µs: mean ± sd (p50, p99) over ${result.trials} trials × ${result.faults} faults, after ${result.warmup} warm-up trials (dropped, both sides).`,
    `Placement: ${result.placement} (server CPU ${result.cpusUsed.server}, target CPU ${result.cpusUsed.target}). ${m.cpus} × ${m.cpu}, ${m.memGiB} GiB, Linux ${m.kernel}, Node ${m.node}.`,
    '',
  );
  out.push('**Ours** (postcopy serve + FaultHandler)', '', grid(result, 'path', (c) => cell(c.ours)), '');
  out.push('**C reference** (bench/reference/pcref.c)', '', grid(result, 'path', (c) => cell(c.ref)), '');
  out.push(
    '**Ratio ours / C** (p50; mean; p99), and our p99/p50',
    '',
    grid(result, 'path', (c) => `**${c.ratio.p50.toFixed(2)}×**; ${c.ratio.mean.toFixed(2)}×; ${c.ratio.p99.toFixed(2)}× — p99/p50 ${(c.ours.p99 / c.ours.p50).toFixed(2)}`),
    '',
  );
  out.push('**Where a fault goes** (means, µs): kernel (uffd + UFFDIO_COPY, local) / network round trip (C) / rest of the C path / what our code adds', '');
  out.push(
    grid(result, 'path', (c) => {
      const b = c.breakdown;
      return `${b.kernel.toFixed(1)} / ${b.network.toFixed(1)} / ${b.refRest.toFixed(1)} / ${b.oursExtra.toFixed(1)}`;
    }),
  );
  return out.join('\n');
}
