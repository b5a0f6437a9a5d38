// Run by `prepare` after the build: npm links the bins of dependencies into node_modules/.bin but not
// the project's own, so `npx gramfuse` in a checkout would fail. Link it (and make it executable).
import { chmodSync, existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const target = join(root, 'dist', 'cli', 'main.js');
if (!existsSync(target)) {
  console.error('link-bin: dist/cli/main.js is missing; run `npm run build` first');
  process.exit(1);
}
chmodSync(target, 0o755);
const binDir = join(root, 'node_modules', '.bin');
mkdirSync(binDir, { recursive: true });
const link = join(binDir, 'gramfuse');
rmSync(link, { force: true });
symlinkSync('../../dist/cli/main.js', link);
