/**
 * A minimal QMP client (the QEMU Machine Protocol: JSON objects, one a line, over a unix socket):
 * the greeting, `qmp_capabilities`, then commands matched to their replies by `id`, and the
 * asynchronous events (STOP, RESUME, MIGRATION, SHUTDOWN, ...) kept in order.
 *
 *   const qmp = await QmpClient.connect('/run/vm.qmp');
 *   await qmp.execute('query-status');          // { status: 'running', running: true, ... }
 *   await qmp.migrate('unix:/run/vm.migrate');  // then waitMigration() for the result
 */
import { createConnection, type Socket } from 'node:net';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/** `query-migrate`'s answer (the fields the tests read; QEMU gives more). */
export interface MigrationInfo {
  status?: string;
  /** Milliseconds the guest was stopped at switch-over (once completed). */
  downtime?: number;
  'total-time'?: number;
  'setup-time'?: number;
  'expected-downtime'?: number;
  'error-desc'?: string;
  ram?: { transferred: number; total: number; remaining: number; 'dirty-sync-count': number };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    desc: string,
  ) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
  }
}

export class QmpClient {
  /** Every event received, oldest first. */
  readonly events: QmpEvent[] = [];
  /** The greeting's `QMP` object (version, capabilities). */
  greeting: Record<string, unknown> = {};
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly eventWaiters: Array<() => void> = [];
  private closed: Error | null = null;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    sock.on('error', (e) => this.fail(e));
    sock.on('close', () => this.fail(new Error('QMP connection closed')));
  }

  /**
   * Connects to the QMP socket at `path` (retrying while QEMU has not created it yet, up to
   * `timeoutMs`), reads the greeting and leaves capabilities negotiation mode.
   */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = createConnection(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const qmp = new QmpClient(sock);
        const greeting = await qmp.firstMessage(Math.max(1000, deadline - Date.now()));
        qmp.greeting = (greeting.QMP as Record<string, unknown>) ?? {};
        await qmp.execute('qmp_capabilities');
        return qmp;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > deadline) throw e;
        await sleep(50);
      }
    }
  }

  private greetingWaiter: ((m: Record<string, unknown>) => void) | null = null;
  private greetingMsg: Record<string, unknown> | null = null;

  private firstMessage(timeoutMs: number): Promise<Record<string, unknown>> {
    if (this.greetingMsg) return Promise.resolve(this.greetingMsg);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no QMP greeting')), timeoutMs);
      this.greetingWaiter = (m) => {
        clearTimeout(t);
        resolve(m);
      };
    });
  }

  private onData(d: string): void {
    this.buf += d;
    for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(JSON.parse(line) as Record<string, unknown>);
    }
  }

  private onMessage(m: Record<string, unknown>): void {
    if ('QMP' in m) {
      this.greetingMsg = m;
      this.greetingWaiter?.(m);
      return;
    }
    if ('event' in m) {
      this.events.push(m as unknown as QmpEvent);
      for (const w of this.eventWaiters.splice(0)) w();
      return;
    }
    const id = String(m.id);
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    const err = m.error as { class: string; desc: string } | undefined;
    if (err) p.reject(new QmpError(id.split(':')[1] ?? '?', err.class, err.desc));
    else p.resolve(m.return);
  }

  private fail(e: Error): void {
    if (this.closed) return;
    this.closed = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
    for (const w of this.eventWaiters.splice(0)) w();
  }

  /** Runs a QMP command; resolves with its `return`, rejects with a QmpError on `error`. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(this.closed);
    const id = `${this.nextId++}:${command}`;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  /** `query-status`: { status: 'running' | 'paused' | 'inmigrate' | 'postmigrate' | ..., running }. */
  queryStatus(): Promise<{ status: string; running: boolean }> {
    return this.execute('query-status');
  }

  /** Starts an outgoing migration to `uri` (e.g. `unix:/path`, `tcp:10.0.0.2:4444`). */
  migrate(uri: string): Promise<unknown> {
    return this.execute('migrate', { uri });
  }

  queryMigrate(): Promise<MigrationInfo> {
    return this.execute('query-migrate');
  }

  /** Polls `query-migrate` until the migration completed (resolves) or failed/cancelled (throws). */
  async waitMigration(timeoutMs = 60_000, pollMs = 50): Promise<MigrationInfo> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const info = await this.queryMigrate();
      if (info.status === 'completed') return info;
      if (info.status === 'failed' || info.status === 'cancelled') {
        throw new Error(`migration ${info.status}: ${info['error-desc'] ?? JSON.stringify(info)}`);
      }
      if (Date.now() > deadline)
        throw new Error(`migration not done in ${timeoutMs} ms: ${JSON.stringify(info)}`);
      await sleep(pollMs);
    }
  }

  /** Waits for an event named `name` (already received after index `from`, or to come). */
  async waitEvent(name: string, timeoutMs = 30_000, from = 0): Promise<QmpEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const e = this.events.slice(from).find((x) => x.event === name);
      if (e) return e;
      if (this.closed) throw new Error(`no ${name} event before: ${this.closed.message}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${name} event in ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.eventWaiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** `quit`: QEMU exits (the connection closes as it does). */
  async quit(): Promise<void> {
    try {
      await this.execute('quit');
    } catch (e) {
      if (!/closed/.test((e as Error).message)) throw e;
    }
  }

  close(): void {
    this.sock.destroy();
  }
}
