import { describe, expect, it } from 'vitest';

import { maxRelativeParameterDifference, readParameterValues, withParameterValues } from '../../../shared/onnx/index.js';
import { syntheticModel } from '../../helpers/models.js';

describe('maxRelativeParameterDifference', () => {
  const model = syntheticModel({
    nodes: [{ op: 'MatMul', inputs: ['x', 'W'], output: 'y' }],
    initializers: [
      { name: 'W', dims: [4, 3] },
      { name: 'Z', dims: [2] },
    ],
    inputs: [{ name: 'x', dims: ['n', 4] }],
    outputs: ['y'],
  });

  it('is 0 for the same values, and the largest max|Δ| / max|b| over parameters otherwise (float64 by hand)', () => {
    expect(maxRelativeParameterDifference(model, model)).toBe(0);
    const w = readParameterValues(model, 'W');
    const changed = w.slice();
    changed[5] = changed[5]! + 0.01; // float32 storage: the difference is what the stored values say
    const other = withParameterValues(model, new Map([['W', changed]]));
    const stored = readParameterValues(other, 'W');
    let diff = 0;
    let scale = 0;
    for (let i = 0; i < w.length; i++) {
      diff = Math.max(diff, Math.abs(stored[i]! - w[i]!));
      scale = Math.max(scale, Math.abs(w[i]!));
    }
    expect(Math.abs(maxRelativeParameterDifference(other, model) - diff / scale)).toBeLessThan(1e-15);
    // An all-zero parameter compares by its absolute difference.
    const zero = withParameterValues(model, new Map([['Z', new Float64Array(2)]]));
    const nudged = withParameterValues(model, new Map([['Z', Float64Array.of(0, 0.5)]]));
    expect(maxRelativeParameterDifference(nudged, zero)).toBeCloseTo(0.5, 12);
  });
});
