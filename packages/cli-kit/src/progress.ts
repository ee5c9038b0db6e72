/**
 * A one-line progress bar for a terminal: `import  [#######.......]  48%  312.5 MiB/s  ETA 0:03`.
 * Redrawn at most every 100 ms; `finish()` draws the last state and ends the line.
 */
const MiB = 1024 * 1024;

export interface ProgressStream {
  write(s: string): boolean;
  columns?: number;
}

function clock(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${r}` : `${m}:${r}`;
}

export class ProgressBar {
  private readonly started = performance.now();
  private lastDraw = this.started;
  private done = 0;
  private ended = false;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly stream: ProgressStream = process.stderr as ProgressStream,
    private readonly intervalMs = 100,
  ) {}

  /** Sets the bytes done so far; redraws when the interval has passed. */
  update(done: number): void {
    this.done = done;
    const now = performance.now();
    if (now - this.lastDraw < this.intervalMs) return;
    this.lastDraw = now;
    this.draw(now);
  }

  /** Draws the final state and moves to the next line. */
  finish(): void {
    if (this.ended) return;
    this.ended = true;
    this.draw(performance.now());
    this.stream.write('\n');
  }

  /** The line for the current state (exposed for tests). */
  render(now = performance.now()): string {
    const secs = (now - this.started) / 1000;
    const frac = this.total > 0 ? Math.min(1, this.done / this.total) : 1;
    const rate = secs > 0 ? this.done / MiB / secs : 0;
    const eta = rate > 0 ? (this.total - this.done) / MiB / rate : Number.NaN;
    const pct = `${Math.floor(frac * 100)}%`.padStart(4);
    const tail = ` ${pct}  ${rate.toFixed(1).padStart(7)} MiB/s  ETA ${clock(frac >= 1 ? 0 : eta)}`;
    const cols = this.stream.columns || 80;
    const width = Math.max(10, Math.min(40, cols - this.label.length - tail.length - 4));
    const filled = Math.round(frac * width);
    return `${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]${tail}`;
  }

  private draw(now: number): void {
    this.stream.write(`\r${this.render(now)}\u001b[K`);
  }
}
