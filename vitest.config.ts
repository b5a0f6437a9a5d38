import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: one file per core keeps onnxruntime's own threads from fighting each other.
    maxWorkers: 2,
  },
});
