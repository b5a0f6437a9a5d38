/** coordinator/store/: the coordinator's durable state as plain files, every write atomic (DESIGN.md §5). */
export { FileStore } from './file-store.js';
