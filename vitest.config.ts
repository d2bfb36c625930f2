import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // Tests build real roots and set real attributes; run files one at a time on 2 cores.
    fileParallelism: false,
  },
});
