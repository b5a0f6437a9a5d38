// transposeBytes (Hugging Face layouts): element (r, c) of a [rows, cols] tensor lands at (c, r), bytes intact,
// for every element width a checkpoint uses; checked against the index formula on random bytes, odd sizes and an
// unaligned source.
import { describe, expect, it } from 'vitest';

import { transposeBytes } from '../../../shared/merge/index.js';

describe('transposeBytes', () => {
  it.each([1, 2, 4, 8])('width %i', (width) => {
    const [rows, cols] = [7, 5];
    const backing = new Uint8Array(rows * cols * width + 1);
    for (let i = 0; i < backing.length; i++) backing[i] = (i * 131 + 7) % 251;
    const bytes = backing.subarray(1); // unaligned on purpose
    const out = transposeBytes(bytes, rows, cols, width);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++)
        for (let b = 0; b < width; b++) expect(out[(c * rows + r) * width + b]).toBe(bytes[(r * cols + c) * width + b]);
    expect(transposeBytes(out, cols, rows, width)).toEqual(new Uint8Array(bytes));
  });
});
