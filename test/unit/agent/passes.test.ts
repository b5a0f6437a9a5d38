import { describe, expect, it } from 'vitest';

import { memoryTarget, passBytes, planPasses } from '../../../agent/index.js';
import { ErrorCode, GramfuseError, parseByteSize } from '../../../shared/index.js';
import type { GramGroup } from '../../../shared/onnx/index.js';

const group = (id: string, inDim: number): GramGroup => ({ id, inDim, inputs: [`x/${id}`], weights: [`w/${id}`] });

describe('collection passes under a memory budget', () => {
  const groups = [group('a', 100), group('b', 100), group('c', 300), group('d', 100)];

  it('packs groups in order into as few passes as fit, each within the budget', () => {
    expect(passBytes(group('x', 100))).toBe(12 * 100 * 100);
    expect(planPasses(groups, 10 ** 9).map((p) => p.groups)).toEqual([['a', 'b', 'c', 'd']]);
    const passes = planPasses(groups, 12 * 300 * 300);
    expect(passes.map((p) => p.groups)).toEqual([['a', 'b'], ['c'], ['d']]);
    for (const p of passes) expect(p.bytes).toBeLessThanOrEqual(12 * 300 * 300);
    expect(passes.flatMap((p) => p.groups)).toEqual(groups.map((g) => g.id));
  });

  it('refuses a group that alone exceeds the budget, naming it and the budget it needs', () => {
    let caught: unknown;
    try {
      planPasses(groups, 12 * 200 * 200);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(GramfuseError);
    expect((caught as GramfuseError).code).toBe(ErrorCode.ResourceExhausted);
    expect((caught as GramfuseError).message).toMatch(/Gram group c .*--memory-budget/);
  });

  it('states the target: model + 1.5 × the largest pass + 500 MiB', () => {
    const passes = planPasses(groups, 12 * 300 * 300);
    expect(memoryTarget(1000, passes)).toBe(1000 + 1.5 * 12 * 300 * 300 + 500 * 2 ** 20);
  });

  it('reads sizes with units', () => {
    expect(parseByteSize('8GB')).toBe(8e9);
    expect(parseByteSize('512MiB')).toBe(512 * 2 ** 20);
    expect(parseByteSize('1.5 GiB')).toBe(1.5 * 2 ** 30);
    expect(parseByteSize('4096')).toBe(4096);
    expect(parseByteSize('lots')).toBeUndefined();
    expect(parseByteSize('0')).toBeUndefined();
  });
});
