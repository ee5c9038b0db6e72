/**
 * syslog for the peers: facility LOCAL0, as the original's peers logged. Each pino line becomes
 * one syslog message (the JSON line is the message) with the severity of its level, sent as an
 * RFC 5424 datagram to a unix socket (`/dev/log` by default) by util-linux `logger`, which reads
 * `<PRI>`-prefixed lines on its stdin (Node has no unix datagram sockets). The `logger` child
 * exits when the peer does (end of its stdin), also after a kill -9.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';

/** syslog facility LOCAL0. */
export const LOCAL0 = 16;

/** pino level → syslog severity (RFC 5424 §6.2.1). */
export function severityOf(level: number): number {
  if (level >= 60) return 2; // fatal → critical
  if (level >= 50) return 3; // error
  if (level >= 40) return 4; // warning
  if (level >= 30) return 6; // info
  return 7; // debug, trace
}

/** `<PRI>` for a pino JSON line (LOCAL0). */
export function priOf(line: string): number {
  const m = /"level":(\d+)/.exec(line);
  return LOCAL0 * 8 + severityOf(m ? Number(m[1]) : 30);
}

export interface SyslogStream {
  write(line: string): boolean;
  flushSync(): void;
}

/** A pino destination that sends every line to syslog through `socket`; null when there is no socket. */
export function syslogStream(socket: string, tag: string): SyslogStream | null {
  if (!existsSync(socket)) return null;
  const child = spawn(
    'logger',
    ['--prio-prefix', '--rfc5424', '-d', '-u', socket, '-t', tag, '--socket-errors=off'],
    { stdio: ['pipe', 'ignore', 'inherit'] },
  );
  child.unref();
  const stdin = child.stdin;
  // The pipe must not keep the peer alive; its handle is internal to the stream.
  (stdin as unknown as { _handle?: { unref?: () => void } })._handle?.unref?.();
  stdin.on('error', () => {
    // logger gone: nothing more can be logged
  });
  return {
    write(chunk: string) {
      for (const line of chunk.split('\n')) {
        if (line !== '') stdin.write(`<${priOf(line)}>${line}\n`);
      }
      return true;
    },
    flushSync() {
      // pipe writes are handed to the kernel as they come
    },
  };
}
