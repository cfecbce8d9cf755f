/**
 * Bounds per-event log lines (one per blocked query or connection) so a flood cannot
 * fill a disk: at most `perSecond` lines in each one-second window; the rest are
 * counted and reported once by whoever calls `takeSuppressed()` (the daemon does so
 * in a periodic "log lines suppressed" line).
 */
export class LogLimiter {
  private windowStart = 0
  private used = 0
  private suppressed = 0

  constructor(private readonly perSecond: number) {}

  allow(now = Date.now()): boolean {
    if (now - this.windowStart >= 1000) {
      this.windowStart = now
      this.used = 0
    }
    if (this.used < this.perSecond) {
      this.used++
      return true
    }
    this.suppressed++
    return false
  }

  takeSuppressed(): number {
    const n = this.suppressed
    this.suppressed = 0
    return n
  }
}
