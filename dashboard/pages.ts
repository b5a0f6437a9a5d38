// The three pages (and the shared frame), rendered on the server from what the coordinator answered this identity
// and what the ledgers say. Every value goes through the `html` tag (escaped); the only script is /app.js.
import type { federation } from '../proto/index.js';
import { ownerReport, reconcileLedgers } from '../shared/audit/index.js';
import { formatBytes } from '../shared/index.js';
import { type Bar, barChart } from './charts.js';
import { html, type Html } from './html.js';
import { type LedgerSet, type LedgerView, mirrored } from './ledgers.js';

export interface Frame {
  /** The coordinator's address and the identity the dashboard reads it as. */
  readonly coordinator: string;
  readonly identity: string;
  readonly live: 'nats' | 'polling';
}

const short = (digest: string, n = 16): string => (digest.length > n ? `${digest.slice(0, n)}…` : digest);

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

const stateClass = (state: string): string =>
  state === 'done' ? 'ok' : state === 'failed' ? 'bad' : state === 'solving' || state === 'collecting' ? 'busy' : 'idle';

// ---- jobs ------------------------------------------------------------------------------------------------------

export function jobsPage(jobs: readonly federation.JobStatus[]): Html {
  const rows = [...jobs]
    .sort((a, b) => a.jobId.localeCompare(b.jobId))
    .map(
      (j) =>
        html`<tr data-job="${j.jobId}">
          <td><a href="/jobs/${encodeURIComponent(j.jobId)}">${j.jobId}</a></td>
          <td>
            <span class="state ${stateClass(j.state)}">${j.state}</span
            >${j.failureCode !== '' ? html` <span class="bad">${j.failureCode}</span>` : ''}
          </td>
          <td>${j.participants.join(', ')}</td>
          <td>${progress(j)}</td>
          <td class="digest">${j.resultSha256 === '' ? '-' : short(j.resultSha256)}</td>
        </tr>`,
    );
  return html`<h1>Jobs</h1>
    <p class="note">Every job this identity may see on the coordinator; the table follows the coordinator's events as they happen.</p>
    <table id="jobs">
      <thead>
        <tr>
          <th>job</th>
          <th>state</th>
          <th>participants</th>
          <th>progress</th>
          <th>merged model SHA-256</th>
        </tr>
      </thead>
      <tbody>
        ${
          rows.length === 0
            ? html`<tr>
                <td colspan="5">No jobs yet.</td>
              </tr>`
            : rows
        }
      </tbody>
    </table>`;
}

function progress(j: federation.JobStatus): string {
  const uploads = `${j.completed.length}/${j.participants.length} owners uploaded`;
  if (j.solveGroups.length === 0) return uploads;
  const committed = j.solveGroups.filter((g) => g.state === 'committed').length;
  return `${uploads}; ${committed}/${j.solveGroups.length} Gram groups solved`;
}

// ---- a job -----------------------------------------------------------------------------------------------------

interface ReportLayer {
  readonly group: string;
  readonly inDim: number;
  readonly rhs: number;
  readonly rows: number;
  readonly jitter: number;
  readonly conditionEstimate: number;
  readonly relativeResidual: number;
  readonly solvedBy?: string;
}

/** The parts of report.json the page shows (the rest is in the file, downloadable by participants). */
export interface JobReport {
  readonly layers?: readonly ReportLayer[];
  readonly outputs?: Record<string, unknown>;
  readonly seconds?: Record<string, number>;
}

interface StatisticRow {
  readonly statistic: string;
  readonly kind: string;
  readonly shape: readonly number[];
  readonly rows: number | null;
  readonly bytes: number;
  readonly sha256: string;
  readonly time: string;
  readonly receipt: string;
  readonly agentConfirms: boolean | null;
}

/** The columns every statistics table has (statistic, kind, shape, rows, bytes, SHA-256), then the caller's own. */
function statisticsTable<R extends Pick<StatisticRow, 'statistic' | 'kind' | 'shape' | 'rows' | 'bytes' | 'sha256'>>(
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

/** The verified ledgers of one role, each once: a writer's mirror on GRAMFUSE_AUDIT is skipped when its file is given too. */
function verifiedLedgers(ledgers: readonly LedgerView[], role: 'coordinator' | 'agent'): LedgerView[] {
  return ledgers.filter(
    (l) =>
      l.verified && l.role === role && !(l.from === 'nats' && ledgers.some((f) => f.from === 'file' && f.verified && f.keyId === l.keyId)),
  );
}
const coordinatorLedgers = (ledgers: readonly LedgerView[]): LedgerView[] => verifiedLedgers(ledgers, 'coordinator');

/** Per owner of the job: the statistics the coordinator's verified ledger(s) record, with their receipts. */
function ownerStatistics(job: string, ledgers: readonly LedgerView[]): { owners: Map<string, StatisticRow[]>; sources: string[] } {
  const owners = new Map<string, StatisticRow[]>();
  const sources: string[] = [];
  const agentReceipts = new Map<string, string>();
  for (const l of ledgers)
    if (l.verified && l.role === 'agent')
      for (const r of l.records)
        if (r.kind === 'receipt.issued' && r.job === job)
          agentReceipts.set(`${r.actor}\u0000${String(r.facts.statistic)}`, String(r.facts.sha256));
  for (const l of coordinatorLedgers(ledgers)) {
    if (!l.records.some((r) => r.job === job)) continue;
    sources.push(l.source);
    const receipts = new Map<string, string>();
    for (const r of l.records)
      if (r.kind === 'receipt.issued' && r.job === job)
        receipts.set(
          `${String(r.facts.owner)}\u0000${String(r.facts.statistic)}`,
          typeof r.facts.signature === 'string' ? r.facts.signature : '',
        );
    for (const r of l.records) {
      if (r.kind !== 'statistic.committed' || r.job !== job) continue;
      const f = r.facts;
      const owner = String(f.owner);
      const key = `${owner}\u0000${String(f.statistic)}`;
      const agentSha = agentReceipts.get(key);
      let rows = owners.get(owner);
      if (rows === undefined) owners.set(owner, (rows = []));
      rows.push({
        statistic: String(f.statistic),
        kind: String(f.kind),
        shape: Array.isArray(f.shape) ? (f.shape as number[]) : [],
        rows: typeof f.rows === 'number' ? f.rows : null,
        bytes: Number(f.bytes),
        sha256: String(f.sha256),
        time: r.time,
        receipt: receipts.get(key) ?? '',
        agentConfirms: agentSha === undefined ? null : agentSha === String(f.sha256),
      });
    }
  }
  return { owners, sources };
}

/** Whether the job uses secure aggregation (its privacy block; absent from coordinators that predate it). */
function secureAggregation(status: federation.JobStatus): boolean {
  try {
    return status.privacyJson !== '' && (JSON.parse(status.privacyJson) as { secureAggregation?: boolean }).secureAggregation === true;
  } catch {
    return false;
  }
}

export function jobPage(status: federation.JobStatus, report: JobReport | undefined, reportNote: string, set: LedgerSet): Html {
  const { owners, sources } = ownerStatistics(status.jobId, set.ledgers);
  const prettyJson = (text: string): string => {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      return text;
    }
  };
  const ownerBars: Bar[] = status.participants.map((p) => {
    const bytes = (owners.get(p) ?? []).reduce((s, r) => s + r.bytes, 0);
    return { label: p, value: bytes, text: formatBytes(bytes) };
  });
  const ownerSections = status.participants.map((p) => {
    const rows = owners.get(p) ?? [];
    const bytes = rows.reduce((s, r) => s + r.bytes, 0);
    const confirmed = rows.filter((r) => r.agentConfirms === true).length;
    return html`<section class="owner" data-owner="${p}">
      <h3>
        ${p} <span class="count" data-statistics="${rows.length}">${rows.length} statistics</span>,
        ${formatBytes(bytes)}${status.completed.includes(p) ? html` <span class="state ok">uploaded</span>` : ''}
      </h3>
      ${rows.some((r) => r.agentConfirms !== null) ? html`<p class="note">${confirmed} of ${rows.length} receipts confirmed by ${p}'s own ledger (same digest).</p>` : ''}
      <details>
        <summary>Statistics of ${p}: shape, rows, bytes, SHA-256, receipt</summary>
        ${statisticsTable(rows, [
          { head: 'receipt signature', cell: (r) => html`<td class="digest">${r.receipt === '' ? '-' : short(r.receipt, 20)}</td>` },
          {
            head: "owner's ledger",
            cell: (r) =>
              html`<td>
                ${r.agentConfirms === null ? '-' : r.agentConfirms ? '✓ same digest' : html`<span class="bad">digest differs</span>`}
              </td>`,
          },
        ])}
      </details>
    </section>`;
  });
  const groups =
    status.solveGroups.length === 0
      ? html`<p class="note">
          ${status.state === 'solving' ? 'Solving in the coordinator (per-group progress is published for distributed solves only).' : status.state === 'done' ? 'Solved; each group’s diagnostics are below.' : 'Not solving yet.'}
        </p>`
      : html`<table id="solve-groups">
          <thead>
            <tr>
              <th>Gram group</th>
              <th>state</th>
              <th>worker</th>
              <th>attempts</th>
              <th>last error</th>
            </tr>
          </thead>
          <tbody>
            ${status.solveGroups.map(
              (g) =>
                html`<tr>
                  <td>${g.group}</td>
                  <td>
                    <span class="state ${g.state === 'committed' ? 'ok' : g.state === 'rejected' || g.state === 'failed' ? 'bad' : 'busy'}"
                      >${g.state}</span
                    >
                  </td>
                  <td>${g.worker || '-'}</td>
                  <td>${g.attempts}</td>
                  <td>${g.lastError || '-'}</td>
                </tr>`,
            )}
          </tbody>
        </table>`;
  const layers = report?.layers ?? [];
  const diagnostics =
    layers.length === 0
      ? html`<p class="note">${reportNote}</p>`
      : html`<div class="charts">
            ${barChart(
              layers.map((l) => ({ label: l.group, value: l.conditionEstimate, text: l.conditionEstimate.toExponential(2) })),
              { title: 'Condition estimate of Σ G̃ per Gram group', log: true },
            )}
            ${barChart(
              layers.map((l) => ({ label: l.group, value: l.relativeResidual, text: l.relativeResidual.toExponential(1) })),
              { title: 'Relative residual ‖G̃X − R‖/‖R‖ per group (the coordinator’s own check)', log: true },
            )}
          </div>
          <table id="layers">
            <thead>
              <tr>
                <th>Gram group</th>
                <th>n</th>
                <th>right-hand sides</th>
                <th>rows</th>
                <th>jitter</th>
                <th>condition estimate</th>
                <th>relative residual</th>
                <th>solved by</th>
              </tr>
            </thead>
            <tbody>
              ${layers.map(
                (l) =>
                  html`<tr>
                    <td>${l.group}</td>
                    <td>${l.inDim}</td>
                    <td>${l.rhs}</td>
                    <td>${l.rows}</td>
                    <td>${l.jitter}</td>
                    <td>${l.conditionEstimate.toExponential(2)}</td>
                    <td>${l.relativeResidual.toExponential(1)}</td>
                    <td>${l.solvedBy ?? 'coordinator'}</td>
                  </tr>`,
              )}
            </tbody>
          </table>`;
  const done = coordinatorLedgers(set.ledgers)
    .flatMap((l) => l.records)
    .filter((r) => r.job === status.jobId && (r.kind === 'solve.done' || r.kind === 'result.fetched'));
  const outputs = report?.outputs ?? {};
  return html`<h1>Job ${status.jobId}</h1>
    <table class="facts">
      <tr>
        <th>state</th>
        <td id="job-state">
          <span class="state ${stateClass(status.state)}">${status.state}</span
          >${status.failureCode !== '' ? html` <span class="bad">${status.failureCode}: ${status.failureMessage}</span>` : ''}
        </td>
      </tr>
      <tr>
        <th>participants</th>
        <td>${status.participants.join(', ')} (quorum ${status.quorum})</td>
      </tr>
      <tr>
        <th>uploaded</th>
        <td id="job-completed">${status.completed.length === 0 ? 'nobody yet' : status.completed.join(', ')}</td>
      </tr>
      <tr>
        <th>template fingerprint</th>
        <td class="digest">${status.fingerprint}</td>
      </tr>
      <tr>
        <th>receipt key</th>
        <td>
          <details>
            <summary>coordinator's Ed25519 public key</summary>
            <pre>${status.receiptPublicKey}</pre>
          </details>
        </td>
      </tr>
    </table>
    <h2>Spec</h2>
    <div class="pair">
      <figure>
        <figcaption>merge</figcaption>
        <pre>${prettyJson(status.mergeSpecJson)}</pre>
      </figure>
      <figure>
        <figcaption>disclosure policy</figcaption>
        <pre>${prettyJson(status.policyJson)}</pre>
      </figure>
    </div>
    <h2>What each owner shared</h2>
    ${
      sources.length === 0
        ? html`<p class="note warn">
            No verified coordinator ledger given to this dashboard records job ${status.jobId}: pass the coordinator's audit.jsonl with
            --ledger (or --nats for its mirror on GRAMFUSE_AUDIT) to see each owner's statistics.
          </p>`
        : html`<p class="note">From ${sources.join(', ')} (verified).</p>
            ${barChart(ownerBars, { title: 'Bytes shared per owner' })}`
    }
    ${
      secureAggregation(status)
        ? html`<p class="note" data-secure="true">
            Secure aggregation: every statistic below left its owner masked (fixed point in Z/2⁶⁴, SecAgg+ masks); the coordinator holds
            only their sum, so per-owner diagnostics do not exist for this job.
          </p>`
        : ''
    }
    ${ownerSections}
    <h2>Solve</h2>
    ${groups}
    <h2>Per-layer diagnostics</h2>
    ${diagnostics}
    <h2>Merged artifacts</h2>
    ${
      status.resultSha256 === ''
        ? html`<p class="note">No merged model yet.</p>`
        : html`<table id="artifacts">
            <thead>
              <tr>
                <th>artifact</th>
                <th>SHA-256</th>
                <th>bytes</th>
              </tr>
            </thead>
            <tbody>
              <tr>
                <td>${typeof outputs.model === 'string' ? outputs.model : 'merged.onnx'}</td>
                <td class="digest">${status.resultSha256}</td>
                <td>${status.resultBytes.toString()}</td>
              </tr>
            </tbody>
          </table>`
    }
    ${
      done.length === 0
        ? ''
        : html`<table id="artifact-records">
            <thead>
              <tr>
                <th>ledger record</th>
                <th>time</th>
                <th>facts</th>
              </tr>
            </thead>
            <tbody>
              ${done.map(
                (r) =>
                  html`<tr>
                    <td>${r.kind}</td>
                    <td>${r.time}</td>
                    <td class="digest">
                      ${r.kind === 'solve.done' ? `merged model ${String(r.facts.mergedModelSha256)}, ${((r.facts.owners as unknown[] | undefined) ?? []).length} owners` : `${String(r.facts.by)} fetched ${String(r.facts.artifact)} (${String(r.facts.sha256)})`}
                    </td>
                  </tr>`,
              )}
            </tbody>
          </table>`
    }`;
}

// ---- audit -----------------------------------------------------------------------------------------------------

export function auditPage(set: LedgerSet, jobs: readonly federation.JobStatus[]): Html {
  const { ledgers } = set;
  const ledgerRows = ledgers.map((l) => {
    const mirror = mirrored(l, ledgers);
    return html`<tr class="${l.verified ? 'verified' : 'broken'}" data-source="${l.source}">
      <td>${l.source}</td>
      <td>${l.role}</td>
      <td>
        ${l.verified ? html`<span class="state ok">verified</span> ${l.records.length} records, chain and signatures valid` : html`<span class="state bad">broken</span> at record ${l.broken!.line === 0 ? '-' : l.broken!.line}: ${l.broken!.message}`}
      </td>
      <td>${l.writers.join(', ') || '-'}</td>
      <td class="digest">${l.keyId || '-'}</td>
      <td>
        ${mirror === undefined ? '-' : mirror.held === mirror.total ? `all ${mirror.total} on the stream` : html`<span class="bad">${mirror.total - mirror.held} of ${mirror.total} not on the stream</span> (its writer publishes them when it reaches NATS, or: gramfuse audit publish)`}
      </td>
    </tr>`;
  });
  const coordinators = coordinatorLedgers(ledgers);
  const agents = verifiedLedgers(ledgers, 'agent');
  const ownerIds = new Set<string>();
  for (const c of coordinators) for (const r of c.records) if (r.kind === 'statistic.committed') ownerIds.add(String(r.facts.owner));
  for (const a of agents) for (const w of a.writers) ownerIds.add(w);
  const coordinatorFile = coordinators.find((c) => c.from === 'file') ?? coordinators[0];
  const owners = [...ownerIds].sort().map((owner) => {
    const sourceLedger = coordinatorFile ?? agents.find((a) => a.writers.includes(owner));
    if (sourceLedger === undefined) return html``;
    const report = ownerReport(sourceLedger.records, owner);
    const total = report.jobs.reduce((s, j) => s + j.statistics.reduce((t, x) => t + x.bytes, 0), 0);
    return html`<section class="owner" data-owner="${owner}">
      <h3>
        ${owner}: ${report.jobs.reduce((s, j) => s + j.statistics.length, 0)} statistics in ${report.jobs.length} job(s),
        ${formatBytes(total)} <span class="note">(from ${sourceLedger.source})</span>
      </h3>
      ${report.jobs.map(
        (j) =>
          html`<details>
            <summary>
              job ${j.job}: ${j.statistics.length} statistics, ${formatBytes(j.statistics.reduce((t, x) => t + x.bytes, 0))};
              ${j.usedBy.length === 0 ? 'not used by a merged model in this ledger' : `used by merged model ${j.usedBy.map((u) => short(u.mergedModelSha256)).join(', ')}`}
            </summary>
            ${statisticsTable(j.statistics, [{ head: 'time', cell: (x) => html`<td>${x.time}</td>` }])}
          </details>`,
      )}
    </section>`;
  });
  const reconciliations = coordinators.flatMap((c) =>
    agents.map((a) => {
      let result: ReturnType<typeof reconcileLedgers>;
      try {
        result = reconcileLedgers(a.records, c.records, a.source, c.source);
      } catch (error) {
        return html`<tr>
          <td>${a.source}</td>
          <td>${c.source}</td>
          <td colspan="2" class="bad">${(error as Error).message}</td>
        </tr>`;
      }
      const bad = result.rows.filter((r) => r.status !== 'match');
      return html`<tr class="${result.agree ? 'verified' : 'broken'}">
        <td>${a.source}</td>
        <td>${c.source}</td>
        <td>${result.owner}</td>
        <td>
          ${
            result.agree
              ? html`<span class="state ok">agree</span> ${result.rows.length} statistics, each receipt matching a committed statistic and
                  an approved plan`
              : html`<span class="state bad">disagree</span> on ${bad.length} of ${result.rows.length}:
                  ${bad
                    .slice(0, 5)
                    .map((b) => `${b.job}/${b.statistic}: ${b.status}`)
                    .join('; ')}${bad.length > 5 ? '; …' : ''}`
          }
        </td>
      </tr>`;
    }),
  );
  // The coordinator's live records against its ledger: each done job's merged model digest, as the ledger has it.
  const liveChecks = jobs
    .filter((j) => j.state === 'done')
    .map((j) => {
      const recorded = coordinators.flatMap((c) => c.records).filter((r) => r.kind === 'solve.done' && r.job === j.jobId);
      const same = recorded.some((r) => r.facts.mergedModelSha256 === j.resultSha256);
      return html`<tr>
        <td>${j.jobId}</td>
        <td class="digest">${short(j.resultSha256, 24)}</td>
        <td>
          ${recorded.length === 0 ? 'no coordinator ledger given records it' : same ? html`<span class="state ok">matches the ledger</span>` : html`<span class="state bad">differs from the ledger</span>`}
        </td>
      </tr>`;
    });
  return html`<h1>Audit</h1>
    <p class="note">
      Each ledger is read and verified again for this page: its hash chain, every signature, and that keys change only through signed
      rotations. A broken ledger's records are not used below.
    </p>
    ${set.natsError === undefined ? '' : html`<p class="note warn">GRAMFUSE_AUDIT could not be read: ${set.natsError}</p>`}
    <table id="ledgers">
      <thead>
        <tr>
          <th>ledger</th>
          <th>writer role</th>
          <th>verification</th>
          <th>writers</th>
          <th>first key</th>
          <th>mirror on NATS</th>
        </tr>
      </thead>
      <tbody>
        ${
          ledgerRows.length === 0
            ? html`<tr>
                <td colspan="6">No ledgers: start the dashboard with --ledger FILE (repeatable) or --nats URL.</td>
              </tr>`
            : ledgerRows
        }
      </tbody>
    </table>
    <h2>What left each owner</h2>
    ${owners.length === 0 ? html`<p class="note">No verified ledger records a statistic.</p>` : owners}
    <h2>Reconciliation: each owner's ledger against the coordinator's</h2>
    ${
      reconciliations.length === 0
        ? html`<p class="note">Needs a verified agent ledger and a verified coordinator ledger.</p>`
        : html`<table id="reconcile">
            <thead>
              <tr>
                <th>agent ledger</th>
                <th>coordinator ledger</th>
                <th>owner</th>
                <th>result</th>
              </tr>
            </thead>
            <tbody>
              ${reconciliations}
            </tbody>
          </table>`
    }
    <h2>The coordinator's results against its ledger</h2>
    ${
      liveChecks.length === 0
        ? html`<p class="note">No finished job visible to this identity.</p>`
        : html`<table id="live-checks">
            <thead>
              <tr>
                <th>job</th>
                <th>merged model (coordinator)</th>
                <th>ledger</th>
              </tr>
            </thead>
            <tbody>
              ${liveChecks}
            </tbody>
          </table>`
    }`;
}

export function errorPage(message: string): Html {
  return html`<h1>Cannot show this</h1>
    <p class="bad">${message}</p>`;
}
