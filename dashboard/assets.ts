// The page's one script and one style sheet, served as /app.js and /style.css (the Content-Security-Policy allows
// nothing else: no inline script or style, no other origin). Kept as strings here so the build is `tsc` alone and
// the page works offline.

/**
 * Live updates: the server's /events stream (server-sent events) names each job that changed; the page fetches
 * itself again and swaps its <main> (the server renders, escaped, as for the first view), keeping open <details>.
 */
export const APP_JS = `'use strict';
(() => {
  const body = document.body;
  const live = document.getElementById('live');
  let timer;
  const refresh = async () => {
    const response = await fetch(location.pathname, { cache: 'no-store', headers: { accept: 'text/html' } });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), 'text/html').getElementById('main');
    const main = document.getElementById('main');
    if (fresh === null || main === null) return;
    const open = new Set(Array.from(main.querySelectorAll('details[open] > summary'), (s) => s.textContent));
    const adopted = document.adoptNode(fresh);
    for (const summary of adopted.querySelectorAll('details > summary'))
      if (open.has(summary.textContent)) summary.parentElement.open = true;
    main.replaceWith(adopted);
    live.dataset.updates = String(Number(live.dataset.updates) + 1);
  };
  const events = new EventSource('/events');
  events.addEventListener('job', (event) => {
    const changed = JSON.parse(event.data);
    if (body.dataset.page === 'job' && changed.job !== body.dataset.job) return;
    clearTimeout(timer);
    timer = setTimeout(() => void refresh(), 200);
  });
  events.addEventListener('open', () => live.classList.remove('lost'));
  events.addEventListener('error', () => live.classList.add('lost'));
})();
`;

export const STYLE_CSS = `:root { color-scheme: light; --ok: #1a7f37; --bad: #cf222e; --busy: #9a6700; --line: #d0d7de; --muted: #57606a; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; background: #fff; }
header { display: flex; gap: 24px; align-items: baseline; padding: 10px 24px; border-bottom: 1px solid var(--line); background: #f6f8fa; }
header nav a { margin-right: 12px; }
header nav a[aria-current] { font-weight: 600; text-decoration: none; color: inherit; }
header .who { margin-left: auto; color: var(--muted); }
#live.lost { color: var(--bad); }
main { padding: 8px 24px 48px; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid var(--line); } h3 { font-size: 15px; margin: 14px 0 4px; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
table.facts th { width: 180px; }
.digest { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; word-break: break-all; }
.note { color: var(--muted); } .warn { color: var(--busy); }
.bad { color: var(--bad); }
.state { display: inline-block; padding: 0 6px; border-radius: 8px; border: 1px solid currentColor; font-size: 12px; }
.state.ok { color: var(--ok); } .state.bad { color: var(--bad); } .state.busy { color: var(--busy); } .state.idle { color: var(--muted); }
pre { background: #f6f8fa; padding: 8px; margin: 0; overflow: auto; font-size: 12px; }
.pair { display: flex; gap: 16px; flex-wrap: wrap; } .pair figure { margin: 0; min-width: 320px; }
figure.chart { margin: 8px 0 16px; } figcaption { font-weight: 600; margin-bottom: 4px; }
svg text { font-size: 11px; fill: #1f2328; } svg text.axis { fill: var(--muted); }
svg rect { fill: #0969da; }
tr.broken td { background: #ffebe9; }
details summary { cursor: pointer; margin: 4px 0; }
`;
