/**
 * One client connection: owns the socket, the received bytes and the parse state, and runs the
 * handshake (handshake.ts), then the transmission phase (transmission.ts). Everything about
 * closing lives here: hard drops, soft disconnects (DISC, ABORT, EOF, server shutdown) and the
 * shutdown grace.
 */
import type { Socket } from 'node:net';
import { ByteQueue } from './byte-queue.js';
import { messageOf } from './errno.js';
import { Handshake } from './handshake.js';
import type { ConnectionContext, ConnectionCore, ConnState, Negotiated } from './phase.js';
import { Transmission } from './transmission.js';
import type { NbdLogger } from './types.js';

/** How long a soft disconnect may wait for the client to take the last replies. */
const DISCONNECT_FLUSH_MS = 30_000;

/**
 * One client connection: the fixed newstyle handshake, then the transmission phase. Incoming bytes
 * are parsed by a small state machine (`pump`, through the phase's `parse`); requests run
 * concurrently and each reply is written in one synchronous burst, so replies never interleave.
 */
export class NbdConnection implements ConnectionCore {
  state: ConnState = 'flags';
  readonly queue = new ByteQueue();
  readonly log: NbdLogger;
  /** The handshake, until the client picked an export. */
  private handshake: Handshake | undefined;
  /** The transmission phase, once the client picked an export. */
  private transmission: Transmission | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private readonly closed: Promise<void>;

  constructor(
    readonly socket: Socket,
    readonly ctx: ConnectionContext,
    readonly id: number,
    onClose: () => void,
  ) {
    this.log = ctx.logger;
    socket.setNoDelay(true);
    this.closed = new Promise<void>((resolve) => {
      socket.once('close', (hadError: boolean) => {
        if (this.state === 'reqPayload' || this.state === 'discard') {
          this.log.warn(
            { conn: this.id, state: this.state, hadError },
            'nbd: client vanished in the middle of a request',
          );
        }
        this.state = 'closed';
        this.queue.clear();
        this.transmission?.abandonPayload();
        if (this.graceTimer) clearTimeout(this.graceTimer);
        this.log.debug({ conn: this.id }, 'nbd: connection closed');
        onClose();
        resolve();
      });
    });
    socket.on('error', (e) => {
      this.log.debug({ conn: this.id, err: messageOf(e) }, 'nbd: socket error');
    });
    socket.on('data', (chunk: Buffer) => {
      if (this.state === 'closed' || this.state === 'disc') return; // drained and ignored
      this.queue.push(chunk);
      this.pump();
    });
    socket.on('end', () => {
      if (this.state === 'closed') return;
      if (this.state === 'reqPayload' || this.state === 'discard') {
        this.log.warn(
          { conn: this.id, state: this.state },
          'nbd: client vanished in the middle of a request',
        );
      } else if (this.queue.length > 0) {
        this.log.warn({ conn: this.id, state: this.state }, 'nbd: client closed after a truncated message');
      }
      this.queue.clear();
      // Finish whatever is in flight; a half-closed client can still read those replies.
      this.beginDisconnect();
    });
    this.handshake = new Handshake(this);
    this.handshake.greet();
  }

  /** Stops taking requests, lets in-flight ones finish (up to `graceMs`), then closes. */
  shutdown(graceMs: number): Promise<void> {
    if (this.state === 'closed') return this.closed;
    const tx = this.transmission;
    if (tx === undefined) {
      this.socket.destroy();
      return this.closed;
    }
    this.beginDisconnect();
    if ((this.state as ConnState) !== 'closed' && !this.graceTimer) {
      this.graceTimer = setTimeout(() => {
        this.log.warn({ conn: this.id, inflight: tx.inflight }, 'nbd: shutdown grace expired; dropping');
        this.socket.destroy();
      }, graceMs);
      this.graceTimer.unref();
    }
    return this.closed;
  }

  pump(): void {
    try {
      if (this.transmission !== undefined) this.transmission.parse();
      else this.handshake?.parse();
      if (this.state === 'closed' || this.state === 'disc') this.queue.clear();
    } catch (e) {
      this.drop('internal error while parsing', { err: messageOf(e) });
    }
  }

  enterTransmission(n: Negotiated): void {
    this.transmission = new Transmission(this, n);
    this.handshake = undefined;
    this.state = 'reqHeader';
    this.log.debug(
      { conn: this.id, export: n.exp.name, structured: n.structured, baseAllocation: n.baseAllocation },
      'nbd: transmission phase',
    );
  }

  drop(reason: string, details: object = {}): void {
    if (this.state === 'closed') return;
    this.log.warn({ conn: this.id, state: this.state, ...details }, `nbd: dropping connection: ${reason}`);
    this.state = 'closed';
    this.queue.clear();
    this.transmission?.abandonPayload();
    this.socket.destroy();
  }

  /**
   * Soft disconnect (client DISC, client EOF, server shutdown): parse nothing more, finish the
   * in-flight requests, then flush the replies and close.
   */
  beginDisconnect(): void {
    if (this.state === 'closed') return;
    if (this.state !== 'disc') {
      this.state = 'disc';
      this.queue.clear();
      this.transmission?.stop();
    }
    this.maybeFinishDisconnect();
  }

  maybeFinishDisconnect(): void {
    if (this.state !== 'disc' || (this.transmission?.inflight ?? 0) > 0) return;
    if (this.socket.destroyed || this.socket.writableEnded) return;
    this.socket.once('finish', () => this.socket.destroy());
    this.socket.end();
    // A client that never reads its last replies must not keep the connection forever.
    setTimeout(() => this.socket.destroy(), DISCONNECT_FLUSH_MS).unref();
  }
}
