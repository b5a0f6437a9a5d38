export { formatBytes, formatTable, packageVersion } from '../shared/index.js';
