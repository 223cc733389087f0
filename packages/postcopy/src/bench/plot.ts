// The report's Figure 3 as a grouped bar chart: mean fault latency ± sd, ours beside the C
// reference, one panel per transport and page size. vega-lite compiles, vega renders SVG
// without a browser, resvg turns it into PNG.
import { writeFileSync } from 'node:fs';
import { extname } from 'node:path';
import { PostcopyError } from '../errors.js';
import type { BenchResult } from './bench.js';
import { columnOf, rowOf } from './report.js';

const IMPLS = ['ours', 'C reference'];

export function plotSpec(result: BenchResult): object {
  const values = result.cases.flatMap((c) =>
    IMPLS.map((impl) => {
      const s = impl === 'ours' ? c.ours : c.ref;
      return { panel: rowOf(c), path: columnOf(c), impl, mean: s.mean, lo: Math.max(0, s.mean - s.sd), hi: s.mean + s.sd, p50: s.p50 };
    }),
  );
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `Remote page fault latency (placement ${result.placement}, ${result.trials} × ${result.faults} faults)`,
    data: { values },
    facet: { column: { field: 'panel', type: 'nominal', title: null } },
    resolve: { scale: { y: 'independent' } },
    spec: {
      width: 260,
      height: 220,
      layer: [
        {
          mark: 'bar',
          encoding: {
            x: { field: 'path', type: 'nominal', title: null, axis: { labelAngle: -30 } },
            xOffset: { field: 'impl', type: 'nominal', sort: 'descending' },
            y: { field: 'mean', type: 'quantitative', title: 'µs (mean ± sd)' },
            color: { field: 'impl', type: 'nominal', title: null, scale: { domain: IMPLS, range: ['#4c78a8', '#bbbbbb'] } },
          },
        },
        {
          mark: { type: 'rule', color: 'black' },
          encoding: { x: { field: 'path', type: 'nominal' }, xOffset: { field: 'impl', type: 'nominal', sort: 'descending' }, y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } },
        },
      ],
    },
  };
}

export async function renderSvg(result: BenchResult): Promise<string> {
  return specToSvg(plotSpec(result));
}

async function specToSvg(spec: object): Promise<string> {
  const vegaLite = await import('vega-lite');
  const vega = await import('vega');
  const compiled = vegaLite.compile(spec as never).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Writes FILE.svg or FILE.png. */
export async function writePlot(result: BenchResult, file: string): Promise<void> {
  await writeSpec(plotSpec(result), file);
}

/** Checks that a plot can go to FILE (.svg or .png), before the work that makes it. */
export function checkPlotFile(file: string): void {
  const kind = extname(file).toLowerCase();
  if (kind !== '.svg' && kind !== '.png') throw new PostcopyError('ERR_INVALID_ARG', `--plot wants a .svg or .png file, not ${file}`);
}

/** Renders a vega-lite spec to FILE.svg or FILE.png. */
export async function writeSpec(spec: object, file: string): Promise<void> {
  checkPlotFile(file);
  const kind = extname(file).toLowerCase();
  const svg = await specToSvg(spec);
  if (kind === '.svg') return writeFileSync(file, svg);
  const { Resvg } = await import('@resvg/resvg-js');
  const png = new Resvg(svg, { background: 'white', fitTo: { mode: 'zoom', value: 2 }, font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' } }).render().asPng();
  writeFileSync(file, png);
}
