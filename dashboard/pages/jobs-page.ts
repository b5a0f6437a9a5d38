// The jobs page: every job this identity may see, one row each.
import type { federation } from '../../proto/index.js';
import { html, type Html } from '../html.js';
import { short, stateClass } from './layout.js';
import { progress } from './view-models.js';

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
