import { describe, expect, it } from 'vitest';

import { zodDefault } from '../../../cli/commands/common.js';
import {
  AuditPublishFlags,
  CertsInitFlags,
  CoordinatorServeFlags,
  JobDownloadFlags,
  JobWatchFlags,
  SolverServeFlags,
} from '../../../cli/federation-flags.js';
import { commonDataFlags, EvalFlags, MergeFlags } from '../../../cli/flags.js';

// Each flag's default is declared once, in its zod type; commander shows and passes on what zodDefault reads there.
describe('flag defaults live in the zod flags', () => {
  it('flags whose default only commander held parse to it when left out', () => {
    expect(CertsInitFlags.parse({ dir: 'ca' }).name).toBe('gramfuse federation CA');
    const serve = CoordinatorServeFlags.parse({ listen: '127.0.0.1:0', state: 'state' });
    expect(serve.maxOpenJobsPerCreator).toBe(16);
    expect(serve.maxConcurrentSolves).toBe(1);
    expect(JobWatchFlags.parse({ nats: 'nats://127.0.0.1:4222' }).timeout).toBe(86400);
    expect(JobDownloadFlags.parse({ coordinator: '127.0.0.1:7443', out: 'merged.onnx' }).artifact).toBe('merged.onnx');
    expect(AuditPublishFlags.parse({ ledger: 'audit.jsonl', nats: 'nats://127.0.0.1:4222' }).timeout).toBe(60);
  });

  it('zodDefault gives commander the default as --help shows it, and zod parses it back to the same value', () => {
    expect(zodDefault(commonDataFlags.seed)).toBe('1');
    expect(zodDefault(commonDataFlags.textField)).toBe('text');
    expect(zodDefault(MergeFlags.shape.tiesK)).toBe('0.2');
    expect(zodDefault(EvalFlags.shape.batchSize)).toBe('64');
    expect(zodDefault(SolverServeFlags.shape.device)).toBe('auto');
    expect(zodDefault(CoordinatorServeFlags.shape.residualTolerance)).toBe('1e-6'); // as written, not 0.000001
    for (const type of [CoordinatorServeFlags.shape.residualTolerance, CoordinatorServeFlags.shape.solveDeadline, MergeFlags.shape.tiesK])
      expect(type.parse(zodDefault(type))).toBe(type.parse(undefined));
  });

  it('a flag without a zod default is refused by zodDefault, not shown as "undefined"', () => {
    expect(() => zodDefault(CoordinatorServeFlags.shape.listen)).toThrow();
    expect(() => zodDefault(SolverServeFlags.shape.threads)).toThrow(/no string or number default/);
  });
});
