// `npm test`: lint, typecheck, generated-code check, build, then vitest. Ends with one line
// `N passed, N failed, N skipped` read from vitest's JSON report (CI reads that line).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const run = (label, command, args) => {
  const started = Date.now();
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' });
  console.log(`test: ${label} ${result.status === 0 ? 'ok' : 'FAILED'} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  return result.status === 0;
};

const extra = process.argv.slice(2);
const steps = [
  ['lint', 'npx', ['eslint', '.']],
  ['typecheck', 'npx', ['tsc', '-p', 'tsconfig.json', '--noEmit']],
  ['generated code', 'node', ['scripts/check-generated.mjs']],
  ['build', 'npm', ['run', '--silent', 'build']],
];
for (const [label, command, args] of steps) {
  if (!run(label, command, args)) {
    console.log(`0 passed, 1 failed`);
    process.exit(1);
  }
}
const dir = mkdtempSync(join(tmpdir(), 'gramfuse-vitest-'));
const report = join(dir, 'report.json');
const ok = run('vitest', 'npx', ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...extra]);
let line = ok ? '0 passed, 0 failed' : '0 passed, 1 failed';
if (existsSync(report)) {
  // Count tests, file by file: a file that failed without a failed test (its beforeAll threw, or it did not
  // load) counts its tests as failed, not skipped; a file with no tests at all counts as one failed test.
  const json = JSON.parse(readFileSync(report, 'utf8'));
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  for (const file of json.testResults ?? []) {
    const tests = file.assertionResults ?? [];
    const fileFailed = file.status === 'failed';
    const anyFailed = tests.some((t) => t.status === 'failed');
    for (const t of tests) {
      if (t.status === 'passed') passed++;
      else if (t.status === 'failed') failed++;
      else if (fileFailed && !anyFailed) failed++;
      else skipped++;
    }
    if (fileFailed && tests.length === 0) failed++;
  }
  line = `${passed} passed, ${Math.max(failed, ok ? 0 : 1)} failed, ${skipped} skipped`;
}
rmSync(dir, { recursive: true, force: true });
console.log(line);
process.exit(ok ? 0 : 1);
