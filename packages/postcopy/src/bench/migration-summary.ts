// What bench --criu and bench --container report alike: per workload and mode, the medians of the
// runs, and postcopy's figures over stock's.
export interface MigrationRunFigures {
  workload: string;
  mode: string;
  downtime_ms: number;
  all_present_ms: number;
  verified: boolean;
  get_during_postcopy: { n: number; p50_us: number; p99_us: number; errors: number } | null;
}

export interface SummaryRow<Mode extends string> {
  workload: string;
  mode: Mode;
  downtime_ms: number;
  all_present_ms: number;
  get_p50_us: number | null;
  get_p99_us: number | null;
  runs: number;
  verified: number;
}

export interface Ratio {
  workload: string;
  downtime: number;
  all_present: number;
}

export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};

const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;

/** Medians per workload and mode (stock first), and postcopy / stock per workload. */
export function summarizeMigrations<Mode extends 'stock' | 'postcopy'>(workloads: readonly string[], runs: readonly MigrationRunFigures[]): { summary: SummaryRow<Mode>[]; ratios: Ratio[] } {
  const summary: SummaryRow<Mode>[] = [];
  const ratios: Ratio[] = [];
  for (const workload of workloads) {
    for (const mode of ['stock', 'postcopy'] as Mode[]) {
      const rs = runs.filter((r) => r.workload === workload && r.mode === mode);
      const gets = rs.map((r) => r.get_during_postcopy).filter((g) => g !== null);
      summary.push({
        workload,
        mode,
        downtime_ms: median(rs.map((r) => r.downtime_ms)),
        all_present_ms: median(rs.map((r) => r.all_present_ms)),
        get_p50_us: gets.length ? median(gets.map((g) => g.p50_us)) : null,
        get_p99_us: gets.length ? median(gets.map((g) => g.p99_us)) : null,
        runs: rs.length,
        verified: rs.filter((r) => r.verified).length,
      });
    }
    const [s, p] = summary.slice(-2);
    ratios.push({ workload, downtime: ratio(p.downtime_ms, s.downtime_ms), all_present: ratio(p.all_present_ms, s.all_present_ms) });
  }
  return { summary, ratios };
}

/** The two tables: the medians, and the ratios. */
export function migrationTables(summary: readonly SummaryRow<string>[], ratios: readonly Ratio[]): string[] {
  return [
    '| workload | mode | downtime ms | all present ms | GET p50 / p99 µs during post-copy | verified |',
    '|---|---|---|---|---|---|',
    ...summary.map((s) => `| ${s.workload} | ${s.mode} | ${s.downtime_ms} | ${s.all_present_ms} | ${s.get_p50_us === null ? '–' : `${s.get_p50_us} / ${s.get_p99_us}`} | ${s.verified}/${s.runs} |`),
    '',
    '| workload | downtime postcopy / stock | all present postcopy / stock |',
    '|---|---|---|',
    ...ratios.map((x) => `| ${x.workload} | ${x.downtime}× | ${x.all_present}× |`),
  ];
}
