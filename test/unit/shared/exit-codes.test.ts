// One exit code per error code: a script that branches on `$?` must be able to tell every coded failure apart.
import { describe, expect, it } from 'vitest';

import { ErrorCode, exitCodeByErrorCode } from '../../../shared/errors.js';

describe('exit codes', () => {
  it('every error code has its own exit code, none 0 and only INTERNAL 1', () => {
    const byExit = new Map<number, string[]>();
    for (const code of Object.values(ErrorCode)) {
      const exit = exitCodeByErrorCode[code];
      expect(exit, code).toBeGreaterThan(0);
      byExit.set(exit, [...(byExit.get(exit) ?? []), code]);
    }
    const shared = [...byExit.entries()].filter(([, codes]) => codes.length > 1);
    expect(shared).toEqual([]);
    expect(byExit.get(1)).toEqual(['INTERNAL']);
  });
});
