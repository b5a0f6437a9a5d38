// Charts as inline SVG, drawn on the server: horizontal bars with their values written beside them, on a linear or
// log10 axis. No charting library: these are the only two charts a person needs here, they render with no script
// (the page's Content-Security-Policy allows no inline style or script), and print as they look.
import { html, type Html } from './html.js';

export interface Bar {
  readonly label: string;
  readonly value: number;
  /** What is written beside the bar (default: the value). */
  readonly text?: string;
}

export interface BarChartOptions {
  readonly title: string;
  /** log10 axis (values ≤ 0 are drawn as empty bars and written as they are). */
  readonly log?: boolean;
  /** Width of the label column, in px. @default 220 */
  readonly labelWidth?: number;
}

const BAR = 16;
const GAP = 4;
const WIDTH = 720;

/** One bar per row, scaled to the largest value (or, on a log axis, from the smallest positive value's decade). */
export function barChart(bars: readonly Bar[], options: BarChartOptions): Html {
  const labelWidth = options.labelWidth ?? 220;
  const plot = WIDTH - labelWidth - 150;
  const positive = bars.map((b) => b.value).filter((v) => Number.isFinite(v) && v > 0);
  const max = positive.length === 0 ? 1 : Math.max(...positive);
  const logMin = positive.length === 0 ? 0 : Math.floor(Math.log10(Math.min(...positive))) - (options.log === true ? 1 : 0);
  const logMax = positive.length === 0 ? 1 : Math.max(Math.ceil(Math.log10(max)), logMin + 1);
  const length = (v: number): number => {
    if (!Number.isFinite(v) || v <= 0) return 0;
    if (options.log !== true) return (plot * v) / max;
    return (plot * (Math.log10(v) - logMin)) / (logMax - logMin);
  };
  const height = 28 + bars.length * (BAR + GAP);
  const rows = bars.map((b, i) => {
    const y = 24 + i * (BAR + GAP);
    const w = Math.max(0, length(b.value));
    return html`<g class="bar"
      ><text x="${labelWidth - 6}" y="${y + BAR - 4}" text-anchor="end">${b.label.length > 34 ? `${b.label.slice(0, 33)}…` : b.label}</text
      ><rect x="${labelWidth}" y="${y}" width="${w.toFixed(1)}" height="${BAR}"
        ><title>${b.label}: ${b.text ?? String(b.value)}</title></rect
      ><text x="${(labelWidth + w + 6).toFixed(1)}" y="${y + BAR - 4}">${b.text ?? String(b.value)}</text></g
    >`;
  });
  const axis =
    options.log === true
      ? html`<text class="axis" x="${labelWidth}" y="14">log₁₀ axis, 10^${logMin} … 10^${logMax}</text>`
      : html`<text class="axis" x="${labelWidth}" y="14">linear axis, 0 … ${max.toPrecision(3)}</text>`;
  return html`<figure class="chart">
    <figcaption>${options.title}</figcaption>
    <svg
      xmlns="http://www.w3.org/2000/svg"
      width="${WIDTH}"
      height="${height}"
      viewBox="0 0 ${WIDTH} ${height}"
      role="img"
      aria-label="${options.title}"
    >
      ${axis}${rows}
    </svg>
  </figure>`;
}
