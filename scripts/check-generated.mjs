// `npm run check`: regenerates protobuf code into a temporary folder and fails if proto/gen differs,
// so generated code can never be edited by hand or go stale.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const out = mkdtempSync(join(tmpdir(), 'gramfuse-gen-'));
try {
  const result = spawnSync('npx', ['buf', 'generate', '--output', out], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  if (result.status !== 0) {
    console.error('check: buf generate failed');
    process.exit(1);
  }
  const list = (dir) =>
    readdirSync(dir).flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? list(path) : [path];
    });
  const fresh = join(out, 'proto', 'gen');
  const committed = join(root, 'proto', 'gen');
  const freshFiles = list(fresh)
    .map((p) => relative(fresh, p))
    .sort();
  const committedFiles = list(committed)
    .map((p) => relative(committed, p))
    .sort();
  const problems = [];
  for (const file of new Set([...freshFiles, ...committedFiles])) {
    if (!freshFiles.includes(file)) problems.push(`${file}: committed but no longer generated`);
    else if (!committedFiles.includes(file)) problems.push(`${file}: generated but not committed`);
    else if (!readFileSync(join(fresh, file)).equals(readFileSync(join(committed, file))))
      problems.push(`${file}: differs from what the .proto files generate`);
  }
  if (problems.length > 0) {
    console.error(`check: proto/gen is stale; run \`npm run gen\` and commit:\n  ${problems.join('\n  ')}`);
    process.exit(1);
  }
  console.log(`check: proto/gen is up to date (${freshFiles.length} files)`);
} finally {
  rmSync(out, { recursive: true, force: true });
}
