import { execFile } from 'node:child_process'

/**
 * Tells systemd (Type=notify) that every listener is bound. Node has no datagram
 * socket for AF_UNIX, so the message goes through `systemd-notify`, a child process:
 * the unit therefore sets NotifyAccess=all. Without NOTIFY_SOCKET this does nothing.
 */
export function notifySystemd(state: string): Promise<void> {
  if (!process.env.NOTIFY_SOCKET) return Promise.resolve()
  return new Promise((resolve) => {
    execFile('systemd-notify', [`--pid=${process.pid}`, state], { timeout: 5000 }, () => resolve())
  })
}
