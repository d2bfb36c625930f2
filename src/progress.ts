// Progress events: the engine says how far each phase is; the CLI draws them (cli-progress)
// on a terminal. Counting is cheap; drawing is throttled by the bar itself.
export type Phase = 'scan' | 'hash' | 'compare' | 'link' | 'undo';
export type Unit = 'files' | 'bytes';
export type ProgressSink = (phase: Phase, done: number, total: number, unit: Unit) => void;

/** A counter for one phase that reports to the sink at most every `every` calls (and at the end). */
export function phaseCounter(sink: ProgressSink | undefined, phase: Phase, total: number, unit: Unit): { add(n: number): void; end(): void } {
  if (!sink || total === 0) return { add() {}, end() {} };
  let done = 0;
  let last = 0;
  sink(phase, 0, total, unit);
  return {
    add(n: number) {
      done += n;
      const now = Date.now();
      if (now - last >= 100) { last = now; sink(phase, done, total, unit); }
    },
    end() { sink(phase, Math.min(done, total), total, unit); },
  };
}
