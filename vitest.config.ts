import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vitest/config';

const root = dirname(fileURLToPath(import.meta.url));
const fixtures = process.env.GRAMFUSE_FIXTURES ?? resolve(root, '../shared/fixtures');
const haveFixtures = existsSync(join(fixtures, 'files.json'));
// Test files that need the full fixture set say so on their first line: `// @needs-fixtures`.
const needing = readdirSync(join(root, 'test'), { recursive: true, encoding: 'utf8' })
  .filter((f) => f.endsWith('.test.ts'))
  .map((f) => join('test', f))
  .filter((f) => readFileSync(join(root, f), 'utf8').startsWith('// @needs-fixtures'));
if (!haveFixtures) {
  if (process.env.CI === 'true')
    throw new Error(
      `CI: the full fixture set is missing at ${fixtures}; CI runs every test (put ../shared beside the repo, or set GRAMFUSE_FIXTURES)`,
    );
  console.log(
    `gramfuse tests: no fixture set at ${fixtures} (set GRAMFUSE_FIXTURES to its path): skipping the ${needing.length} test files that need it`,
  );
}

// Test files that drive a real browser say so on their first line: `// @needs-browser` (Debian's chromium; .ci/run
// installs it, nothing downloads one).
const browser = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => p !== undefined && existsSync(p));
const needingBrowser = readdirSync(join(root, 'test'), { recursive: true, encoding: 'utf8' })
  .filter((f) => f.endsWith('.test.ts'))
  .map((f) => join('test', f))
  .filter((f) => readFileSync(join(root, f), 'utf8').startsWith('// @needs-browser'));
if (browser === undefined) {
  if (process.env.CI === 'true')
    throw new Error('CI: no chromium at /usr/bin/chromium (apt-get install chromium, or set CHROMIUM_PATH); CI runs every test');
  console.log(
    `gramfuse tests: no chromium (apt-get install chromium, or set CHROMIUM_PATH): skipping the ${needingBrowser.length} test file(s) that drive a browser`,
  );
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: [...(haveFixtures ? [] : needing), ...(browser === undefined ? needingBrowser : [])],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: one file per core keeps onnxruntime's own threads from fighting each other.
    maxWorkers: 2,
  },
});
