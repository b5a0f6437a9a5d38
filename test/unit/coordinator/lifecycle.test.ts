import { describe, expect, it } from 'vitest';

import { checkTransition, TRANSITIONS } from '../../../coordinator/index.js';
import { ErrorCode, type GramfuseError } from '../../../shared/index.js';

describe('job lifecycle table', () => {
  it('allows the documented path and the resumed solve', () => {
    for (const [from, to] of [
      ['open', 'collecting'],
      ['collecting', 'solving'],
      ['solving', 'done'],
      ['solving', 'solving'],
      ['failed', 'solving'],
      ['open', 'failed'],
      ['open', 'open'],
    ] as const)
      expect(() => checkTransition('j', from, to)).not.toThrow();
  });

  it('refuses anything else with INTERNAL naming both states; done is final', () => {
    expect(TRANSITIONS.done).toEqual([]);
    for (const [from, to] of [
      ['done', 'solving'],
      ['open', 'solving'],
      ['collecting', 'done'],
      ['done', 'failed'],
    ] as const) {
      let caught: GramfuseError | undefined;
      try {
        checkTransition('j', from, to);
      } catch (error) {
        caught = error as GramfuseError;
      }
      expect(caught?.code).toBe(ErrorCode.Internal);
      expect(caught?.message).toContain(`from ${from} to ${to}`);
    }
  });
});
