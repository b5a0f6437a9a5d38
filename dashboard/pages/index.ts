/** dashboard/pages/: the pages the dashboard serves, their view models (view-models.ts) apart from their markup. */
export { auditPage } from './audit-page.js';
export { jobPage } from './job-page.js';
export { jobsPage } from './jobs-page.js';
export { errorPage, type Frame, layout } from './layout.js';
export type { JobReport } from './view-models.js';
