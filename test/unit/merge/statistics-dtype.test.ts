// The statistics' dtype an agent sends by default (`--dtype auto`): float64 for small models, float32 past the
// stated size; an owner's explicit choice always stands.
import { describe, expect, it } from 'vitest';

import { FLOAT32_STATISTICS_ABOVE_BYTES, statisticsDtype } from '../../../shared/merge/index.js';
import type { ModelAnalysis } from '../../../shared/onnx/index.js';

const withParameterBytes = (...bytes: number[]): ModelAnalysis =>
  ({ parameters: bytes.map((b, i) => ({ name: `p${i}`, dtype: 'float16', shape: [b / 2], bytes: b })) }) as unknown as ModelAnalysis;

describe('statisticsDtype', () => {
  it('auto: float64 up to the threshold, float32 past it (summed over every parameter)', () => {
    expect(FLOAT32_STATISTICS_ABOVE_BYTES).toBe(1024 ** 3);
    expect(statisticsDtype('auto', withParameterBytes(400e6, 600e6))).toBe('float64');
    expect(statisticsDtype('auto', withParameterBytes(600e6, 600e6))).toBe('float32');
  });
  it("the owner's explicit dtype stands whatever the size", () => {
    expect(statisticsDtype('float64', withParameterBytes(16e9))).toBe('float64');
    expect(statisticsDtype('float32', withParameterBytes(1e6))).toBe('float32');
  });
});
