// The audit page: each ledger verified again, what left each owner, each owner's ledger reconciled against the
// coordinator's, and the coordinator's results against its ledger. The data comes from auditView (view-models.ts).
import type { federation } from '../../proto/index.js';
import { formatBytes } from '../../shared/index.js';
import { html, type Html } from '../html.js';
import type { LedgerSet } from '../ledgers.js';
import { short, statisticsTable } from './layout.js';
import { auditView, type LedgerRow, type LiveCheck, type OwnerLedgerReport, type ReconciliationRow } from './view-models.js';

export function auditPage(set: LedgerSet, jobs: readonly federation.JobStatus[]): Html {
  const view = auditView(set, jobs);
  const ledgerRows = view.ledgers.map(ledgerRow);
  const owners = view.owners.map(ownerSection);
  const reconciliations = view.reconciliations.map(reconciliationRow);
  const liveChecks = view.liveChecks.map(liveCheckRow);
  return html`<h1>Audit</h1>
    <p class="note">
      Each ledger is read and verified again for this page: its hash chain, every signature, and that keys change only through signed
      rotations. A broken ledger's records are not used below.
    </p>
    ${view.natsError === undefined ? '' : html`<p class="note warn">GRAMFUSE_AUDIT could not be read: ${view.natsError}</p>`}
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

function ledgerRow({ ledger: l, mirror }: LedgerRow): Html {
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
}

function ownerSection({ owner, from }: OwnerLedgerReport): Html {
  if (from === undefined) return html``;
  return html`<section class="owner" data-owner="${owner}">
    <h3>
      ${owner}: ${from.statistics} statistics in ${from.jobs.length} job(s), ${formatBytes(from.bytes)}
      <span class="note">(from ${from.source})</span>
    </h3>
    ${from.jobs.map(
      (j) =>
        html`<details>
          <summary>
            job ${j.job}: ${j.statistics.length} statistics, ${formatBytes(j.bytes)};
            ${j.usedBy.length === 0 ? 'not used by a merged model in this ledger' : `used by merged model ${j.usedBy.map((u) => short(u.mergedModelSha256)).join(', ')}`}
          </summary>
          ${statisticsTable(j.statistics, [{ head: 'time', cell: (x) => html`<td>${x.time}</td>` }])}
        </details>`,
    )}
  </section>`;
}

function reconciliationRow(row: ReconciliationRow): Html {
  if ('error' in row)
    return html`<tr>
      <td>${row.agent}</td>
      <td>${row.coordinator}</td>
      <td colspan="2" class="bad">${row.error}</td>
    </tr>`;
  const { result, disagreeing: bad } = row;
  return html`<tr class="${result.agree ? 'verified' : 'broken'}">
    <td>${row.agent}</td>
    <td>${row.coordinator}</td>
    <td>${result.owner}</td>
    <td>
      ${
        result.agree
          ? html`<span class="state ok">agree</span> ${result.rows.length} statistics, each receipt matching a committed statistic and an
              approved plan`
          : html`<span class="state bad">disagree</span> on ${bad.length} of ${result.rows.length}:
              ${bad
                .slice(0, 5)
                .map((b) => `${b.job}/${b.statistic}: ${b.status}`)
                .join('; ')}${bad.length > 5 ? '; …' : ''}`
      }
    </td>
  </tr>`;
}

function liveCheckRow(check: LiveCheck): Html {
  return html`<tr>
    <td>${check.job}</td>
    <td class="digest">${short(check.resultSha256, 24)}</td>
    <td>
      ${check.ledger === 'unrecorded' ? 'no coordinator ledger given records it' : check.ledger === 'matches' ? html`<span class="state ok">matches the ledger</span>` : html`<span class="state bad">differs from the ledger</span>`}
    </td>
  </tr>`;
}
