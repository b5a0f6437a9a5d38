/** dashboard/: `gramfuse dashboard`, the read-only web view of jobs, what every owner shared, and the ledgers. */
export { CONTENT_SECURITY_POLICY, type Dashboard, type DashboardOptions, startDashboard } from './server.js';
export { escapeHtml, Html, html } from './html.js';
export { barChart } from './charts.js';
