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
  const json = JSON.parse(readFileSync(report, 'utf8'));
  const failed =
    json.numFailedTests +
    (json.numFailedTestSuites ?? 0) -
    (json.testResults ?? []).filter((s) => s.status === 'failed' && s.assertionResults?.some((a) => a.status === 'failed')).length;
  line = `${json.numPassedTests} passed, ${Math.max(failed, ok ? 0 : 1)} failed, ${json.numPendingTests + json.numTodoTests} skipped`;
}
rmSync(dir, { recursive: true, force: true });
console.log(line);
process.exit(ok ? 0 : 1);
