/**
 * Where requests come from and replies go: /dev/fuse in production (one read(2) is one whole
 * request, one write(2) one whole reply), anything with the same shape in tests.
 */
import { close, read, writeSync } from 'node:fs';

export interface FuseChannel {
  /** Reads one request into `buf`; `n` is its length. Errors carry the errno code. */
  read(buf: Buffer, cb: (err: NodeJS.ErrnoException | null, n: number) => void): void;
  /** Writes one reply (synchronously: /dev/fuse takes it at once). Throws with its errno code. */
  write(reply: Buffer): void;
  close(): void;
}

/**
 * A /dev/fuse file descriptor. Reads block in the kernel until a request comes, each in a libuv
 * pool thread (UV_THREADPOOL_SIZE bounds how many readers and file I/Os can wait at once).
 */
export class DevFuseChannel implements FuseChannel {
  private closed = false;

  constructor(readonly fd: number) {}

  read(buf: Buffer, cb: (err: NodeJS.ErrnoException | null, n: number) => void): void {
    read(this.fd, buf, 0, buf.length, null, (err, n) => cb(err, n));
  }

  write(reply: Buffer): void {
    writeSync(this.fd, reply);
  }

  /** Closes the descriptor: once no process holds one, the kernel aborts the connection. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    close(this.fd, () => {});
  }
}
