/** coordinator/store/: the coordinator's durable state behind the StatisticStore contract; FileStore keeps it as plain
 * files, every write atomic (DESIGN.md §5). */
export { FileStore } from './file-store.js';
export type { StatisticStore } from './statistic-store.js';
