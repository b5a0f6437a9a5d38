// npm run bench [-- <name> ...] [--json] [--quick] [--threads N] [--arch A] [--agents N] [--model M] [--owners N]
// Benchmarks print tables of ratios against baselines measured in the same run; never timed tests.
import { cpus } from 'node:os';

import type { BenchContext } from './harness.js';
import { benchCollect } from './collect.js';
import { benchScale } from './scale.js';
import { benchSecure } from './secure.js';
import { benchSecurePrimitives } from './secure-primitives.js';
import { benchSolve } from './solve.js';
import { benchSolveDistributed } from './solve-distributed.js';
import { benchUpload } from './upload.js';

const benches: Record<string, (context: BenchContext) => Promise<void>> = {
  solve: benchSolve,
  collect: benchCollect,
  upload: benchUpload,
  scale: benchScale,
  'solve-distributed': benchSolveDistributed,
  'secure-primitives': benchSecurePrimitives,
  secure: benchSecure,
};

const args = process.argv.slice(2);
const json = args.includes('--json');
const quick = args.includes('--quick');
const threadsAt = args.indexOf('--threads');
const threads = threadsAt >= 0 ? Number(args[threadsAt + 1]) : Math.min(2, cpus().length);
const valued = new Set(['--threads', '--arch', '--agents', '--model', '--owners']);
const names = args.filter((a, i) => !a.startsWith('--') && !valued.has(args[i - 1] ?? ''));
const unknown = names.filter((n) => !(n in benches));
if (unknown.length > 0) {
  process.stderr.write(`bench: unknown benchmark ${unknown.join(', ')}; choose from ${Object.keys(benches).join(', ')}\n`);
  process.exitCode = 2;
} else {
  const context: BenchContext = {
    json,
    quick,
    threads,
    option: (name) => {
      const at = args.indexOf(`--${name}`);
      return at >= 0 ? args[at + 1] : undefined;
    },
    emit: (result) => {
      if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
    },
    print: (text) => {
      if (!json) process.stdout.write(`${text}\n\n`);
    },
  };
  if (!json)
    process.stdout.write(
      `gramfuse benchmarks, ${new Date().toISOString()}, ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown CPU'}), node ${process.version}\n\n`,
    );
  for (const name of names.length > 0 ? names : Object.keys(benches)) await benches[name]!(context);
}
