// The progress display of the CLI: one cli-progress bar per phase on stderr, with rate and
// ETA for phases that read bytes.
import cliProgress from 'cli-progress';
import type { Phase, ProgressSink, Unit } from './progress.js';
import { humanBytes } from './report.js';

const LABEL: Record<Phase, string> = { scan: 'scanning', hash: 'hashing', compare: 'comparing', link: 'linking', undo: 'restoring' };

function eta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  if (seconds < 60) return `${Math.round(seconds)}s`;
  return `${Math.floor(seconds / 60)}m${String(Math.round(seconds % 60)).padStart(2, '0')}s`;
}

export function terminalProgress(): { sink: ProgressSink; stop: () => void } {
  // One line per phase: compare and link alternate chunk by chunk, each keeps its own rate.
  const state = new Map<Phase, { bar: cliProgress.SingleBar; unit: Unit; started: number; ended?: number }>();
  let multi: cliProgress.MultiBar | null = null;
  const format = (options: cliProgress.Options, params: cliProgress.Params, payload: { phase: Phase }): string => {
    const st = state.get(payload.phase)!;
    const width = options.barsize ?? 30;
    const frac = params.total > 0 ? Math.min(1, params.value / params.total) : 1;
    const full = Math.round(frac * width);
    // A finished phase keeps the rate it ended with, not one that decays while others run.
    if (params.value >= params.total) st.ended ??= Date.now();
    else st.ended = undefined;
    const secs = ((st.ended ?? Date.now()) - st.started) / 1000;
    const rate = secs > 0 ? params.value / secs : 0;
    const left = rate > 0 ? (params.total - params.value) / rate : NaN;
    const amount = st.unit === 'bytes'
      ? `${humanBytes(params.value)}/${humanBytes(params.total)}  ${humanBytes(rate)}/s`
      : `${params.value}/${params.total} files  ${Math.round(rate)}/s`;
    return `${LABEL[payload.phase].padEnd(9)} ${'█'.repeat(full)}${'░'.repeat(width - full)} ${String(Math.round(frac * 100)).padStart(3)}%  ${amount}  ETA ${eta(left)}`;
  };
  const sink: ProgressSink = (phase, done, total, unit) => {
    multi ??= new cliProgress.MultiBar({ format, stream: process.stderr, hideCursor: true, barsize: 30, fps: 10, noTTYOutput: true, notTTYSchedule: 1000, clearOnComplete: false });
    const st = state.get(phase);
    if (!st) {
      const bar = multi.create(total, done, { phase });
      state.set(phase, { bar, unit, started: Date.now() });
      return;
    }
    // A phase that comes back (the next chunk) adds to its total.
    if (done === 0 && st.bar.getProgress() >= 1) { st.bar.setTotal(st.bar.getTotal() + total); return; }
    st.bar.setTotal(Math.max(total, st.bar.getTotal()));
    st.bar.update(done);
  };
  return { sink, stop: () => { multi?.stop(); multi = null; state.clear(); } };
}
