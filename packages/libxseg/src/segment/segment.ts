/**
 * The XSEG shared-memory segment, for JavaScript.
 *
 * A thin facade over the native addon (`native/`): it checks arguments before they cross into
 * C++, turns native failures into `ArchipelagoError`s with stable codes, and keeps the native
 * object behind a Symbol. Data is never copied on the way in or out: `req.data` and `reply.data`
 * are Buffers over the shared mapping. They stay valid (the mapping stays mapped) as long as any
 * Buffer references them, but their *contents* belong to the request only until it is answered
 * (server side) or released (client side).
 */
import { ArchipelagoError, archipError, type ErrorCode } from '../errors.js';
import { XS } from '../protocol.js';
import {
  loadAddon,
  type NativeError,
  type NativeRequest,
  type NativeSegment,
  type NativeWaiterStats,
  S_DATA_LEN,
  S_DATA_OFF,
  S_DST,
  S_FLAGS,
  S_HANDLE,
  S_OFFSET,
  S_OP,
  S_SERVICED,
  S_SIZE,
  S_SRC,
  S_STATE,
  SCRATCH_LENGTH,
} from './native.js';
import { parseSpec, type SegmentSpec } from './spec.js';

const native = Symbol('xseg.native');

/** Runs a native call, turning its errors into ArchipelagoErrors. */
function call<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw toArchipError(e);
  }
}

function toArchipError(e: unknown): Error {
  if (ArchipelagoError.isInstance(e)) return e;
  const err = e as { code?: unknown; message?: unknown; corrupt?: unknown };
  if (err && typeof err.code === 'string' && typeof err.message === 'string') {
    return archipError(err.code as ErrorCode, err.message, {
      cause: e,
      details: err.corrupt ? { corrupt: true } : {},
    });
  }
  return e as Error;
}

function asSpec(spec: string | SegmentSpec): SegmentSpec {
  // A bare name (no ':') means that segment with the default geometry.
  if (typeof spec === 'string') return parseSpec(spec.includes(':') ? spec : `posix:${spec}`);
  return spec;
}

function checkInt(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${String(v)}`);
  return v;
}

export interface SubmitOptions {
  dst: number;
  op: number;
  target?: string;
  offset?: number;
  size?: number;
  flags?: number;
  /** Bytes to send (copied into the segment unless they already live there, see `prepare`). */
  data?: Buffer | null;
  /** Room to reserve for the reply when no data is sent (default: `size`). */
  reserve?: number;
}

/** A request as the serving port sees it. */
export interface XsegRequest {
  readonly handle: number;
  readonly op: number;
  readonly flags: number;
  readonly offset: number;
  readonly size: number;
  readonly src: number;
  readonly dst: number;
  readonly target: string;
  /** The request's data in shared memory; a read fills it in place and responds without data. */
  readonly data: Buffer;
}

export interface RespondOptions {
  state?: number;
  serviced?: number;
  /** Reply data; copied in unless it is (a view at the start of) `req.data` already. */
  data?: Buffer;
}

/** A reply as the submitting port sees it. */
export interface XsegReply {
  readonly handle: number;
  readonly op: number;
  readonly state: number;
  readonly ok: boolean;
  readonly serviced: number;
  readonly offset: number;
  readonly size: number;
  readonly target: string;
  readonly data: Buffer;
  /** Set when the reply's bytes in the segment failed a check. */
  readonly error?: ArchipelagoError;
  /** Returns the request and its data to the segment. */
  release(): void;
  /** In an `onReply` callback: keep the reply past the callback (then `release()` it yourself). */
  keep(): void;
}

export interface PreparedRequest {
  /** The request's data in shared memory: fill it, then `submit`. No copy is made. */
  readonly data: Buffer;
  submit(opts: Omit<SubmitOptions, 'data' | 'reserve'>): number;
  call(opts: Omit<SubmitOptions, 'data' | 'reserve'>, how?: CallOptions): Promise<XsegReply>;
  release(): void;
}

/** How `call` hands over its reply. */
export interface CallOptions {
  /**
   * false: the caller always releases the reply, so it is not registered for release at garbage
   * collection (a reply dropped unreleased then keeps its request until the port closes).
   */
  tracked?: boolean;
}

export interface PortReport {
  port: number;
  dynamic: boolean;
  bound: boolean;
  ownerPid: number;
  ownerAlive: boolean;
  binds: number;
  allocReqs: number;
  requestQueue: number;
  replyQueue: number;
  freeQueue: number;
  lockOwnerPid: number;
  /** The owner's loop may be asleep: enqueuers ring its doorbell (false while it runs or spins). */
  armed: boolean;
}

export interface SegmentReport {
  name: string;
  segmentSize: number;
  nrPorts: number;
  dynports: number;
  heap: {
    size: number;
    used: number;
    free: number;
    usedChunks: number;
    freeChunks: number;
    largestFree: number;
    error?: string;
  };
  requests: {
    total: number;
    free: number;
    held: number;
    queued: number;
    accepted: number;
    replies: number;
    corrupt: number;
  };
  locks: { name: string; ownerPid: number; ownerAlive: boolean }[];
  ports: PortReport[];
}

export interface Recovery {
  port: number;
  /** Requests the dead peer had accepted, failed back to their senders. */
  failed: number;
  /** Stale replies and requests the dead peer held, returned to the pool. */
  freed: number;
}

export interface JoinOptions {
  /**
   * The most a port with replies due may spin, per event-loop turn, waiting for them before the
   * loop sleeps (µs; 0 = never). Default: `$ARCHIPELAGO_XSEG_SPIN_US`, else 50. A spin only
   * happens when the loop has nothing else ready, adapts to how fast replies come, and backs
   * off when they do not (see the package README, "Wake-ups").
   */
  spinUs?: number;
  /**
   * The most a port that has just served requests may spin for the next one, counted from the
   * end of that drain (µs; 0 = never). Default: `$ARCHIPELAGO_XSEG_LINGER_US`, else 50. Same
   * rules as `spinUs`; an idle port spins at most once.
   */
  lingerUs?: number;
}

export interface CreateOptions extends JoinOptions {
  /** Requests in the pool (not part of the spec string); default 4096. */
  nrReqs?: number;
}

/** Wake-up counters of a port in this process (diagnostics; see `Port.stats`). */
export type PortStats = NativeWaiterStats;

const DEFAULT_SPIN_US = 50;
const DEFAULT_LINGER_US = 50;

function usOption(name: string, v: number | undefined, envName: string, def: number): number {
  if (v !== undefined) return checkInt(name, v, 0, 1_000_000);
  const env = process.env[envName];
  if (env === undefined || env === '') return def;
  const n = Number(env);
  return Number.isInteger(n) && n >= 0 && n <= 1_000_000 ? n : def;
}

function spinOptions(o: JoinOptions): { spinUs: number; lingerUs: number } {
  return {
    spinUs: usOption('spinUs', o.spinUs, 'ARCHIPELAGO_XSEG_SPIN_US', DEFAULT_SPIN_US),
    lingerUs: usOption('lingerUs', o.lingerUs, 'ARCHIPELAGO_XSEG_LINGER_US', DEFAULT_LINGER_US),
  };
}

const released = new FinalizationRegistry<() => void>((release) => {
  try {
    release();
  } catch {
    // the segment is closed; nothing to give back
  }
});

/**
 * The registry's cleanup for one reply. Built here, outside `deliver`: a closure made inside it
 * would share deliver's context, which holds the reply and its data, and a held value that
 * reaches its own target keeps it alive for ever (so no dropped reply was ever released before).
 */
function releaseLater(n: NativeSegment, port: number, handle: number, st: { done: boolean }): () => void {
  return () => {
    if (!st.done) n.release(port, handle);
  };
}

export class Segment {
  readonly [native]: NativeSegment;
  readonly name: string;
  /** The heap as one ArrayBuffer over the mapping; request data are views into it. */
  private heap: ArrayBuffer | undefined;
  private readonly ports = new Map<number, Port>();
  private closed = false;
  /** @internal Numbers of the request being accepted/received (see native.ts, S_*). */
  readonly scratch = new Float64Array(SCRATCH_LENGTH);
  /** @internal Default spin budgets of this segment's ports (µs). */
  readonly spin: { spinUs: number; lingerUs: number };

  private constructor(n: NativeSegment, opts: JoinOptions) {
    this[native] = n;
    this.name = String(n.geometry().name);
    this.spin = spinOptions(opts);
    n.setScratch(this.scratch);
  }

  /** Creates `/dev/shm/<name>`; fails with EBUSY when it exists. */
  static create(spec: string | SegmentSpec, opts: CreateOptions = {}): Segment {
    const s = asSpec(spec);
    const nrReqs = checkInt('nrReqs', opts.nrReqs ?? 4096, 16, 1 << 20);
    spinOptions(opts);
    const { NativeSegment } = loadAddon();
    return new Segment(
      call(() =>
        NativeSegment.create(s.name, s.nrPorts, s.dynports, s.sizeMiB * 2 ** 20, s.pageShift, nrReqs),
      ),
      opts,
    );
  }

  /** Maps an existing segment, checking its magic, version and geometry. */
  static join(spec: string | SegmentSpec, opts: JoinOptions = {}): Segment {
    const s = asSpec(spec);
    spinOptions(opts);
    const { NativeSegment } = loadAddon();
    return new Segment(
      call(() => NativeSegment.join(s.name)),
      opts,
    );
  }

  /** Joins the segment, or creates it when there is none. */
  static open(spec: string | SegmentSpec, opts: CreateOptions = {}): Segment {
    try {
      return Segment.join(spec, opts);
    } catch (e) {
      if (ArchipelagoError.is(e, 'EINVAL') && /no segment/.test(e.message)) {
        try {
          return Segment.create(spec, opts);
        } catch (e2) {
          if (ArchipelagoError.is(e2, 'EBUSY')) return Segment.join(spec, opts);
          throw e2;
        }
      }
      throw e;
    }
  }

  /**
   * Gives the segment `/dev/shm/<name>` and its wake-up files (`/dev/shm/<name>.bell/`) to an
   * account: owner `uid` (-1: unchanged) and group `gid`, mode 0660 (the directory 2770, setgid,
   * so doorbells made later are the group's too). Root does this for Archipelago's USER and GROUP:
   * every member of the group can then join and use the segment, nobody else can open it.
   */
  static share(name: string, owner: { uid: number; gid: number }): void {
    checkInt('uid', owner.uid, -1, 2 ** 32 - 2);
    checkInt('gid', owner.gid, 0, 2 ** 32 - 2);
    const { NativeSegment } = loadAddon();
    call(() => NativeSegment.share(name, owner.uid, owner.gid));
  }

  /** Unlinks `/dev/shm/<name>`. Processes that have it mapped keep their mapping. */
  static destroy(nameOrSpec: string | SegmentSpec): void {
    const name =
      typeof nameOrSpec === 'string' && !nameOrSpec.includes(':') ? nameOrSpec : asSpec(nameOrSpec).name;
    const { NativeSegment } = loadAddon();
    call(() => NativeSegment.destroy(name));
  }

  geometry(): {
    name: string;
    segmentSize: number;
    nrPorts: number;
    dynports: number;
    nrReqs: number;
    heapSize: number;
  } {
    return this.n().geometry() as never;
  }

  /** Binds static port `n` (below dynports). A dead previous owner's accepted requests are failed back. */
  bindPort(n: number): Port {
    const g = this.geometry();
    checkInt('port', n, 0, g.dynports - 1);
    const r = call(() => this.n().bind(n));
    return this.track(new Port(this, r.port, r));
  }

  /** Binds the first free dynamic port. */
  bindDynamicPort(): Port {
    const r = call(() => this.n().bindDynamic());
    return this.track(new Port(this, r.port, r));
  }

  report(): SegmentReport {
    return call(() => this.n().report()) as SegmentReport;
  }

  /**
   * Fails back to their senders the requests port `n` had accepted, and frees what it held.
   * Refused (EBUSY) while the port's owner is alive, unless `force`.
   */
  recoverPort(n: number, opts: { force?: boolean } = {}): Recovery {
    checkInt('port', n, 0, this.geometry().nrPorts - 1);
    return call(() => this.n().recoverPort(n, opts.force === true));
  }

  /** Releases every segment lock held by dead process `pid`, repairing what it guarded. Returns the count. */
  recoverLocks(pid: number): number {
    checkInt('pid', pid, 1, 2 ** 31 - 1);
    return call(() => this.n().recoverLocks(pid));
  }

  /** Stops this process's waiters and unmaps (once no Buffer refers to the mapping). Ports stay bound. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.ports.values()) p.detach();
    this.ports.clear();
    this[native].close();
  }

  /** @internal */
  n(): NativeSegment {
    if (this.closed) throw archipError('ECLOSED', `segment '${this.name}' was closed`);
    return this[native];
  }

  /** @internal A zero-copy view of heap bytes. */
  view(off: number, len: number): Buffer {
    if (len === 0) return Buffer.alloc(0);
    this.heap ??= this[native].heapBuffer();
    return Buffer.from(this.heap, off, len);
  }

  /** @internal The request or reply the addon has just left in `scratch`, with its target. */
  taken(target: string): Taken {
    const x = this.scratch;
    return {
      handle: x[S_HANDLE] as number,
      op: x[S_OP] as number,
      flags: x[S_FLAGS] as number,
      state: x[S_STATE] as number,
      offset: x[S_OFFSET] as number,
      size: x[S_SIZE] as number,
      serviced: x[S_SERVICED] as number,
      src: x[S_SRC] as number,
      dst: x[S_DST] as number,
      target,
      data: this.view(x[S_DATA_OFF] as number, x[S_DATA_LEN] as number),
    };
  }

  /** @internal */
  forget(p: Port): void {
    this.ports.delete(p.number);
  }

  private track(p: Port): Port {
    this.ports.get(p.number)?.detach();
    this.ports.set(p.number, p);
    return p;
  }
}

/**
 * A request or reply as taken from a port's queue: what the serving side sees (an `XsegRequest`)
 * plus the reply's state and count, and `corrupt` when its bytes failed a check.
 */
interface Taken extends XsegRequest {
  readonly state: number;
  readonly serviced: number;
  readonly corrupt?: string;
}

type RequestHandler = (req: XsegRequest) => void;
type ReplyHandler = (reply: XsegReply) => void;

export class Port {
  readonly segment: Segment;
  readonly number: number;
  /** What binding recovered from a dead previous owner. */
  readonly recovered: Recovery;
  private requestHandler: RequestHandler | undefined;
  private replyHandler: ReplyHandler | undefined;
  private errorHandler: ((e: ArchipelagoError) => void) | undefined;
  private readonly waiting = new Map<number, (r: XsegReply) => void>();
  /** Handles of calls made with `{ tracked: false }` whose replies are due. */
  private readonly untracked = new Set<number>();
  private started = false;
  private refed = true;
  private detached = false;
  private spin: { spinUs: number; lingerUs: number };

  /** @internal */
  constructor(segment: Segment, n: number, recovered: Recovery) {
    this.segment = segment;
    this.number = n;
    this.recovered = recovered;
    this.spin = { ...segment.spin };
  }

  /** Overrides the segment's `spinUs` / `lingerUs` for this port (µs; 0 = never spin). */
  setSpin(opts: JoinOptions): this {
    this.spin = {
      spinUs: checkInt('spinUs', opts.spinUs ?? this.spin.spinUs, 0, 1_000_000),
      lingerUs: checkInt('lingerUs', opts.lingerUs ?? this.spin.lingerUs, 0, 1_000_000),
    };
    if (this.started) this.segment.n().setSpin(this.number, this.spin.spinUs, this.spin.lingerUs);
    return this;
  }

  /** Wake-up counters (spins, spin hits, doorbell wakes, replies due); undefined before the port starts. */
  stats(): PortStats | undefined {
    if (!this.started) return undefined;
    return this.segment[native].waiterStats(this.number) ?? undefined;
  }

  /** Sends a request; the reply comes to `onReply` (or to `call`'s promise). Returns its handle. */
  submit(opts: SubmitOptions): number {
    const { dst, op, target, offset, size, flags, data } = this.checkSubmit(opts);
    const reserve = data
      ? data.length
      : checkInt('reserve', opts.reserve ?? size, 0, Number.MAX_SAFE_INTEGER);
    this.start();
    const n = this.segment.n();
    return call(() => n.submit(this.number, dst, op, flags, offset, size, target, data, reserve));
  }

  /**
   * Submits and resolves with the reply (release it when done with its data). A reply dropped
   * without `release()` is released once neither it nor its `data` Buffer is reachable (a
   * FinalizationRegistry on `data`; a `subarray` of `data` does not keep it: copy what you keep
   * past `release`), unless `{ tracked: false }`: for callers that always release (in a
   * `finally`), as the peer clients do. The registry costs 2–5 µs per round trip on a 2-vCPU VM.
   */
  call(opts: SubmitOptions, how?: CallOptions): Promise<XsegReply> {
    return this.callWith(() => this.submit(opts), how);
  }

  /** Allocates a request with `datalen` bytes of shared data to fill in place (zero copy). */
  prepare(datalen: number): PreparedRequest {
    checkInt('datalen', datalen, 0, Number.MAX_SAFE_INTEGER);
    const n = this.segment.n();
    const prep = call(() => n.prepare(this.number, datalen));
    const handle = prep.handle;
    const data = this.segment.view(prep.dataOff, prep.dataLen);
    let sent = false;
    const send = (o: Omit<SubmitOptions, 'data' | 'reserve'>) => {
      if (sent) throw archipError('EINVAL', 'prepared request already submitted or released');
      const c = this.checkSubmit(o);
      this.start();
      call(() => n.submitPrepared(handle, c.dst, c.op, c.flags, c.offset, c.size, c.target));
      sent = true;
      return handle;
    };
    return {
      data,
      submit: send,
      call: (o, how) => this.callWith(() => send(o), how),
      release: () => {
        if (!sent) call(() => n.release(this.number, handle));
        sent = true;
      },
    };
  }

  /** Serve requests sent to this port (accept). One handler; each request gets exactly one `respond`. */
  onRequest(handler: RequestHandler): this {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    this.requestHandler = handler;
    this.start();
    return this;
  }

  /** Replies not claimed by `call()`. The reply is released after the callback unless `keep()`. */
  onReply(handler: ReplyHandler): this {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    this.replyHandler = handler;
    this.start();
    return this;
  }

  /** Corrupt requests or queues met while serving this port (the senders got failures). */
  onError(handler: (e: ArchipelagoError) => void): this {
    this.errorHandler = handler;
    return this;
  }

  respond(req: XsegRequest, opts: RespondOptions = {}): void {
    const state = opts.state ?? XS.SERVED;
    const serviced = opts.serviced ?? (state === XS.SERVED ? req.size : 0);
    checkInt('serviced', serviced, 0, Number.MAX_SAFE_INTEGER);
    if (opts.data !== undefined && !Buffer.isBuffer(opts.data)) throw new TypeError('data must be a Buffer');
    const n = this.segment.n();
    call(() => n.respond(this.number, req.handle, state, serviced, opts.data ?? null));
  }

  /** Lets the process exit while this port waits (default: a port with handlers keeps it alive). */
  unref(): this {
    this.refed = false;
    if (this.started) this.segment.n().refWaiter(this.number, false);
    return this;
  }

  ref(): this {
    this.refed = true;
    if (this.started) this.segment.n().refWaiter(this.number, true);
    return this;
  }

  /** Leaves the port (a dynamic port becomes free; a static one keeps queueing for the next owner). */
  close(): void {
    if (this.detached) return;
    this.detach();
    this.segment.forget(this);
    call(() => this.segment.n().leave(this.number));
  }

  /** @internal */
  detach(): void {
    if (this.detached) return;
    this.detached = true;
    if (this.started) this.segment[native].stopWaiter(this.number);
    this.started = false;
  }

  private checkSubmit(o: SubmitOptions) {
    if (typeof o !== 'object' || o === null) throw new TypeError('submit options must be an object');
    const target = o.target ?? '';
    if (typeof target !== 'string') throw new TypeError('target must be a string');
    if (Buffer.byteLength(target) > 256) throw archipError('EINVAL', 'target is longer than 256 bytes');
    if (o.data != null && !Buffer.isBuffer(o.data)) throw new TypeError('data must be a Buffer');
    return {
      dst: checkInt('dst', o.dst, 0, 65535),
      op: checkInt('op', o.op, 0, 0xffffffff),
      flags: checkInt('flags', o.flags ?? 0, 0, 0xffffffff),
      offset: checkInt('offset', o.offset ?? 0, 0, Number.MAX_SAFE_INTEGER),
      size: checkInt('size', o.size ?? o.data?.length ?? 0, 0, Number.MAX_SAFE_INTEGER),
      target,
      data: o.data ?? null,
    };
  }

  private start(): void {
    if (this.started || this.detached) return;
    const n = this.segment.n();
    call(() => n.startWaiter(this.number, () => this.drain()));
    this.started = true;
    n.setSpin(this.number, this.spin.spinUs, this.spin.lingerUs);
    if (!this.refed) n.refWaiter(this.number, false);
  }

  private report(errs: NativeError[]): void {
    for (const e of errs) {
      const err = archipError(e.code as ErrorCode, e.message, {
        details: { port: this.number, corrupt: true },
      });
      if (this.errorHandler) this.errorHandler(err);
      else process.emitWarning(`xseg port ${this.number}: ${e.message}`);
    }
    errs.length = 0;
  }

  /** Run by the port's waiter (on this thread) whenever the port has work: takes everything that arrived. */
  private drain(): void {
    if (this.detached) return;
    const errs: NativeError[] = [];
    for (let req = this.take(false, errs); req !== null; req = this.take(false, errs)) this.serve(req);
    for (let reply = this.take(true, errs); reply !== null; reply = this.take(true, errs))
      this.deliver(reply);
  }

  /**
   * The next request (or, with `reply`, the next reply) that arrived; null when there is none.
   * Problems met on the way are reported; a failing queue ends the batch.
   */
  private take(reply: boolean, errs: NativeError[]): Taken | null {
    const n = this.segment[native];
    let r: string | NativeRequest | null;
    try {
      r = reply ? n.receiveFast(this.number, errs) : n.acceptFast(this.number, errs);
    } catch (e) {
      this.report([{ code: 'EIO', message: (e as Error).message }]);
      return null;
    }
    if (errs.length) this.report(errs);
    if (r === null) return null;
    // a reply whose data failed a check comes as an object (with `corrupt`, and no data)
    return typeof r === 'string'
      ? this.segment.taken(r)
      : { ...r, data: this.segment.view(r.dataOff, r.dataLen) };
  }

  /** Hands a request to the handler; it fails back when there is none, or when the handler throws. */
  private serve(req: XsegRequest): void {
    const n = this.segment[native];
    if (!this.requestHandler) {
      n.respond(this.number, req.handle, XS.FAILED, 0, null);
      return;
    }
    try {
      this.requestHandler(req);
    } catch (e) {
      try {
        n.respond(this.number, req.handle, XS.FAILED, 0, null);
      } catch {
        // already answered before throwing
      }
      this.report([{ code: 'EIO', message: `request handler threw: ${(e as Error).message}` }]);
    }
  }

  /** Sends a request with `send` (which returns its handle); resolves with the reply to it. */
  private callWith(send: () => number, how: CallOptions | undefined): Promise<XsegReply> {
    return new Promise((resolve, reject) => {
      try {
        const h = send();
        this.waiting.set(h, resolve);
        if (how?.tracked === false) this.untracked.add(h);
      } catch (e) {
        reject(e);
      }
    });
  }

  private deliver(r: Taken): void {
    const n = this.segment[native];
    const st = { done: false };
    let kept = false;
    let registered = false;
    const port = this.number;
    const handle = r.handle;
    const release = () => {
      if (st.done) return;
      st.done = true;
      if (registered) released.unregister(reply);
      n.release(port, handle);
    };
    // The safety net for a reply its taker may drop unreleased (see `call`).
    const track = () => {
      registered = true;
      released.register(reply.data, releaseLater(n, port, handle, st), reply);
    };
    const reply: XsegReply = {
      handle: r.handle,
      op: r.op,
      state: r.state,
      ok: (r.state & XS.FAILED) === 0 && (r.state & XS.SERVED) !== 0 && r.corrupt === undefined,
      serviced: r.serviced,
      offset: r.offset,
      size: r.size,
      target: r.target,
      data: r.data,
      ...(r.corrupt !== undefined
        ? { error: archipError('EIO', `segment corrupt: ${r.corrupt}`, { details: { corrupt: true, port } }) }
        : {}),
      release,
      keep: () => {
        kept = true;
      },
    };
    const waiter = this.waiting.get(r.handle);
    if (waiter) {
      this.waiting.delete(r.handle);
      if (!this.untracked.delete(r.handle)) track();
      waiter(reply);
      return;
    }
    if (!this.replyHandler) {
      release();
      return;
    }
    try {
      this.replyHandler(reply);
    } finally {
      if (!kept) release();
      else track();
    }
  }
}
