// The frame around every page and the markup the pages share. Every value goes through the `html` tag (escaped);
// the only script is /app.js.
import { html, type Html } from '../html.js';
import type { StatisticRow } from './view-models.js';

export interface Frame {
  /** The coordinator's address and the identity the dashboard reads it as. */
  readonly coordinator: string;
  readonly identity: string;
  readonly live: 'nats' | 'polling';
}

export const short = (digest: string, n = 16): string => (digest.length > n ? `${digest.slice(0, n)}…` : digest);

/** The page around `body`; `page` and `job` tell /app.js what to refresh on a live update. */
export function layout(frame: Frame, title: string, page: 'jobs' | 'job' | 'audit', body: Html, job?: string): Html {
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>${title} · gramfuse</title>
        <link rel="stylesheet" href="/style.css" />
        <script src="/app.js" defer></script>
      </head>
      <body data-page="${page}" data-job="${job ?? ''}">
        <header>
          <strong>gramfuse</strong>
          <nav>
            <a href="/" ${page === 'jobs' ? html` aria-current="page"` : ''}>Jobs</a>
            <a href="/audit" ${page === 'audit' ? html` aria-current="page"` : ''}>Audit</a>
          </nav>
          <span class="who"
            >read-only · coordinator ${frame.coordinator} as <b>${frame.identity}</b> · live:
            <span id="live" data-updates="0">${frame.live === 'nats' ? 'events bus' : 'polling'}</span></span
          >
        </header>
        <main id="main">${body}</main>
      </body>
    </html> `;
}

export function errorPage(message: string): Html {
  return html`<h1>Cannot show this</h1>
    <p class="bad">${message}</p>`;
}

export const stateClass = (state: string): string =>
  state === 'done' ? 'ok' : state === 'failed' ? 'bad' : state === 'solving' || state === 'collecting' ? 'busy' : 'idle';

/** The columns every statistics table has (statistic, kind, shape, rows, bytes, SHA-256), then the caller's own. */
export function statisticsTable<R extends Pick<StatisticRow, 'statistic' | 'kind' | 'shape' | 'rows' | 'bytes' | 'sha256'>>(
  rows: readonly R[],
  extra: readonly { head: string; cell: (row: R) => Html }[],
): Html {
  return html`<table class="stats">
    <thead>
      <tr>
        <th>statistic</th>
        <th>kind</th>
        <th>shape</th>
        <th>rows</th>
        <th>bytes</th>
        <th>SHA-256</th>
        ${extra.map((e) => html`<th>${e.head}</th>`)}
      </tr>
    </thead>
    <tbody>
      ${rows.map(
        (r) =>
          html`<tr>
            <td>${r.statistic}</td>
            <td>${r.kind}</td>
            <td>${r.shape.length === 0 ? '-' : `[${r.shape.join(', ')}]`}</td>
            <td>${r.rows ?? '-'}</td>
            <td>${r.bytes}</td>
            <td class="digest">${r.sha256}</td>
            ${extra.map((e) => e.cell(r))}
          </tr>`,
      )}
    </tbody>
  </table>`;
}
