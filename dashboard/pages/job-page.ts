// A job's page: its facts and spec, what each owner shared (from the verified ledgers), the solve, the per-layer
// diagnostics of report.json and the merged artifacts. The data comes from jobView (view-models.ts).
import type { federation } from '../../proto/index.js';
import { formatBytes } from '../../shared/index.js';
import { type Bar, barChart } from '../charts.js';
import { html, type Html } from '../html.js';
import type { LedgerSet } from '../ledgers.js';
import { short, stateClass, statisticsTable } from './layout.js';
import { type JobReport, type JobView, jobView, type OwnerShare, type ReportLayer } from './view-models.js';

export function jobPage(status: federation.JobStatus, report: JobReport | undefined, reportNote: string, set: LedgerSet): Html {
  const view = jobView(status, report, reportNote, set);
  const ownerBars: Bar[] = view.owners.map((o) => ({ label: o.owner, value: o.bytes, text: formatBytes(o.bytes) }));
  return html`<h1>Job ${status.jobId}</h1>
    ${jobFacts(status)}
    <h2>Spec</h2>
    <div class="pair">
      <figure>
        <figcaption>merge</figcaption>
        <pre>${view.mergeSpec}</pre>
      </figure>
      <figure>
        <figcaption>disclosure policy</figcaption>
        <pre>${view.policy}</pre>
      </figure>
    </div>
    <h2>What each owner shared</h2>
    ${
      view.sources.length === 0
        ? html`<p class="note warn">
            No verified coordinator ledger given to this dashboard records job ${status.jobId}: pass the coordinator's audit.jsonl with
            --ledger (or --nats for its mirror on GRAMFUSE_AUDIT) to see each owner's statistics.
          </p>`
        : html`<p class="note">From ${view.sources.join(', ')} (verified).</p>
            ${barChart(ownerBars, { title: 'Bytes shared per owner' })}`
    }
    ${
      view.secureAggregation
        ? html`<p class="note" data-secure="true">
            Secure aggregation: every statistic below left its owner masked (fixed point in Z/2⁶⁴, SecAgg+ masks); the coordinator holds
            only their sum, so per-owner diagnostics do not exist for this job.
          </p>`
        : ''
    }
    ${view.owners.map(ownerSection)}
    <h2>Solve</h2>
    ${solveGroups(status)}
    <h2>Per-layer diagnostics</h2>
    ${diagnostics(view.layers, view.reportNote)}
    <h2>Merged artifacts</h2>
    ${artifacts(view)}`;
}

function jobFacts(status: federation.JobStatus): Html {
  return html`<table class="facts">
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
  </table>`;
}

function ownerSection({ owner: p, rows, bytes, confirmed, uploaded }: OwnerShare): Html {
  return html`<section class="owner" data-owner="${p}">
    <h3>
      ${p} <span class="count" data-statistics="${rows.length}">${rows.length} statistics</span>,
      ${formatBytes(bytes)}${uploaded ? html` <span class="state ok">uploaded</span>` : ''}
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
}

function solveGroups(status: federation.JobStatus): Html {
  if (status.solveGroups.length === 0)
    return html`<p class="note">
      ${status.state === 'solving' ? 'Solving in the coordinator (per-group progress is published for distributed solves only).' : status.state === 'done' ? 'Solved; each group’s diagnostics are below.' : 'Not solving yet.'}
    </p>`;
  return html`<table id="solve-groups">
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
}

function diagnostics(layers: readonly ReportLayer[], reportNote: string): Html {
  if (layers.length === 0) return html`<p class="note">${reportNote}</p>`;
  return html`<div class="charts">
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
}

function artifacts({ status, artifactName, artifactRecords }: JobView): Html {
  return html`${
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
              <td>${artifactName}</td>
              <td class="digest">${status.resultSha256}</td>
              <td>${status.resultBytes.toString()}</td>
            </tr>
          </tbody>
        </table>`
  }
  ${
    artifactRecords.length === 0
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
            ${artifactRecords.map(
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
