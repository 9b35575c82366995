/**
 * Download progress for `kiapi activate`, fed by hub.py's events. On a terminal: a bar per file in
 * flight and a total bar with speed and ETA, redrawn in place (ANSI), at most 10 times a second.
 * Otherwise (logs, CI): one line per finished file and a total line every 10 %.
 */
import type { DownloadEvent } from '../core/setup/hub-driver.js';
import { formatBytes, formatDuration, formatRate } from './format.js';

interface Writable {
  write(text: string): unknown;
  columns?: number;
}

export interface ProgressView {
  handle(event: DownloadEvent): void;
  /** A line that stays (printed above the bars). */
  note(line: string): void;
  /** Clears the bars; call once when the download is over, whatever its outcome. */
  finish(): void;
}

const REDRAW_MS = 100;
const SPEED_WINDOW_MS = 10_000;
const MAX_FILE_LINES = 6;

/** Speed over a sliding window of (time, bytes) samples, and ETA from it. */
export class RateMeter {
  private readonly samples: { t: number; bytes: number }[] = [];
  constructor(private readonly windowMs = SPEED_WINDOW_MS) {}

  add(t: number, bytes: number): void {
    this.samples.push({ t, bytes });
    while (this.samples.length > 2 && t - this.samples[0]!.t > this.windowMs) this.samples.shift();
  }

  /** Bytes per second, or 0 before two samples a moment apart. */
  rate(): number {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    if (!first || !last || last.t - first.t < 200) return 0;
    return ((last.bytes - first.bytes) * 1000) / (last.t - first.t);
  }

  eta(remaining: number): number {
    const r = this.rate();
    return r > 0 ? remaining / r : Number.POSITIVE_INFINITY;
  }
}

export function bar(done: number, total: number, width: number): string {
  const fraction = total > 0 ? Math.min(1, Math.max(0, done / total)) : 1;
  const filled = Math.round(fraction * width);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
}

export function createProgressView(out: Writable, tty: boolean, now: () => number = Date.now): ProgressView {
  const active = new Map<string, { done: number; total: number }>();
  const meter = new RateMeter();
  let total = 0;
  let done = 0;
  let drawnLines = 0;
  let lastDraw = 0;
  let lastPercentStep = -1;
  let status = '';

  const width = () => Math.max(40, (out.columns ?? 100) - 1);
  const fit = (line: string) => (line.length > width() ? `${line.slice(0, width() - 1)}…` : line);

  function clear(): void {
    if (drawnLines > 0) out.write(`\x1b[${drawnLines}F\x1b[J`);
    drawnLines = 0;
  }

  function totalLine(): string {
    const rate = meter.rate();
    const eta = meter.eta(total - done);
    const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
    return `${String(pct).padStart(3)}% ${formatBytes(done)} / ${formatBytes(total)}  ${rate > 0 ? formatRate(rate) : '…'}  ETA ${formatDuration(eta)}`;
  }

  function draw(force = false): void {
    if (!tty) return;
    const t = now();
    if (!force && t - lastDraw < REDRAW_MS) return;
    lastDraw = t;
    clear();
    const lines: string[] = [];
    const files = [...active.entries()];
    for (const [path, f] of files.slice(0, MAX_FILE_LINES)) {
      lines.push(fit(`  ${bar(f.done, f.total, 20)} ${formatBytes(f.done).padStart(8)} / ${formatBytes(f.total).padEnd(8)} ${path}`));
    }
    if (files.length > MAX_FILE_LINES) lines.push(`  … and ${files.length - MAX_FILE_LINES} more files in flight`);
    lines.push(fit(status || `  ${bar(done, total, 30)} ${totalLine()}`));
    out.write(`${lines.join('\n')}\n`);
    drawnLines = lines.length;
  }

  function note(line: string): void {
    clear();
    out.write(`${line}\n`);
    draw(true);
  }

  return {
    note,
    handle(e) {
      switch (e.event) {
        case 'start':
          total = e.total;
          done = e.cached;
          meter.add(now(), done);
          if (!tty) {
            out.write(`  ${e.files} files, ${formatBytes(e.total)}${e.cached > 0 ? ` (${formatBytes(e.cached)} already in the cache)` : ''}\n`);
          }
          draw(true);
          break;
        case 'progress':
          done = e.bytes;
          meter.add(now(), done);
          if (e.file_total !== null && e.file_bytes < e.file_total) active.set(e.file, { done: e.file_bytes, total: e.file_total });
          else active.delete(e.file);
          if (!tty && total > 0) {
            const step = Math.floor((done / total) * 10);
            if (step > lastPercentStep && step < 10) {
              lastPercentStep = step;
              if (step > 0) out.write(`  ${totalLine()}\n`);
            }
          }
          draw();
          break;
        case 'file':
          active.delete(e.file);
          if (tty) {
            if (!e.cached) note(`  done   ${e.file} (${formatBytes(e.size)})`);
          } else {
            out.write(`  ${e.cached ? 'cached' : 'done  '} ${e.file} (${formatBytes(e.size)})\n`);
          }
          break;
        case 'verify':
          active.clear();
          done = total;
          status = `  verifying checksums of ${e.files} files (${formatBytes(e.bytes)}) …`;
          if (tty) draw(true);
          else out.write(`${status}\n`);
          break;
        default:
          break;
      }
    },
    finish() {
      clear();
    },
  };
}
