/** Loads the addon. Only `@archipelago/libxseg/segment` reaches this file. */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { archipError } from '../errors.js';

export interface NativeRequest {
  handle: number;
  op: number;
  flags: number;
  state: number;
  offset: number;
  size: number;
  serviced: number;
  src: number;
  dst: number;
  target: string;
  dataOff: number;
  dataLen: number;
  corrupt?: string;
}

/** Indices into the scratch Float64Array filled by acceptFast/receiveFast. */
export const S_HANDLE = 0;
export const S_OP = 1;
export const S_FLAGS = 2;
export const S_STATE = 3;
export const S_OFFSET = 4;
export const S_SIZE = 5;
export const S_SERVICED = 6;
export const S_SRC = 7;
export const S_DST = 8;
export const S_DATA_OFF = 9;
export const S_DATA_LEN = 10;
export const SCRATCH_LENGTH = 11;

export interface NativeError {
  code: string;
  message: string;
}

export interface NativeWaiterStats {
  /** Requests this port submitted whose replies have not been received. */
  outstanding: number;
  /** Spins for replies due, how many found one, µs spent, moving average of a hit (µs). */
  spins: number;
  hits: number;
  spunUs: number;
  avgHitUs: number;
  /** Spins for the next request after serving (linger), hits, µs spent. */
  lingers: number;
  lingerHits: number;
  lingerUs: number;
  /** Spins (either kind) cut short because another task was waiting for the CPU. */
  contended: number;
  /** Doorbell wake-ups of the event loop. */
  wakes: number;
  spinMaxUs: number;
  lingerMaxUs: number;
  /** Whether peers ring this port's doorbell (it may be asleep). */
  armed: boolean;
}

/** Where a request goes and what it asks, as `submit` and `submitPrepared` take it. */
export type Routing = [dst: number, op: number, flags: number, offset: number, size: number, target: string];

export interface NativeSegment {
  geometry(): Record<string, number | string>;
  bind(port: number): { port: number; failed: number; freed: number };
  bindDynamic(): { port: number; failed: number; freed: number };
  leave(port: number): void;
  submit(src: number, ...rest: [...Routing, data: Buffer | null, datalen: number]): number;
  prepare(src: number, datalen: number): { handle: number; dataOff: number; dataLen: number };
  submitPrepared(handle: number, ...routing: Routing): void;
  accept(port: number, errors: NativeError[]): NativeRequest | null;
  respond(port: number, handle: number, state: number, serviced: number, data: Buffer | null): void;
  receive(port: number, errors: NativeError[]): NativeRequest | null;
  /** The hot path: numbers into the scratch array (layout `S_*`), the target as the result. */
  setScratch(scratch: Float64Array): void;
  acceptFast(port: number, errors: NativeError[]): string | null;
  /** A reply whose data failed a check comes as `receive` returns it (with `corrupt`). */
  receiveFast(port: number, errors: NativeError[]): string | NativeRequest | null;
  release(port: number, handle: number): void;
  startWaiter(port: number, wake: () => void): void;
  stopWaiter(port: number): void;
  refWaiter(port: number, ref: boolean): void;
  setSpin(port: number, maxUs: number, lingerUs: number): void;
  waiterStats(port: number): NativeWaiterStats | null;
  report(): unknown;
  recoverPort(port: number, force: boolean): { port: number; failed: number; freed: number };
  recoverLocks(pid: number): number;
  close(): void;
  heapBuffer(): ArrayBuffer;
  debugFixedSpin(port: number, fixed: boolean): void;
  debugHoldLock(which: 'heap' | 'segment' | 'port', port?: number): void;
}

export interface NativeSegmentClass {
  create(
    name: string,
    nrPorts: number,
    dynports: number,
    heapSize: number,
    pageShift: number,
    nrReqs: number,
  ): NativeSegment;
  join(name: string): NativeSegment;
  destroy(name: string): void;
  share(name: string, uid: number, gid: number): void;
}

let addon: { NativeSegment: NativeSegmentClass; VERSION: number } | undefined;

/** build/Release while developing (node-gyp output), dist/ once built (what turbo caches). */
export function loadAddon(): { NativeSegment: NativeSegmentClass; VERSION: number } {
  if (addon) return addon;
  const candidates = ['../../build/Release/xseg.node', '../../dist/xseg.node', '../xseg.node'].map((p) =>
    fileURLToPath(new URL(p, import.meta.url)),
  );
  const found = candidates.find((p) => existsSync(p));
  if (!found)
    throw archipError(
      'ENOTSUP',
      'the native segment addon is not built; run `pnpm run build` in packages/libxseg',
      {
        details: { tried: candidates },
      },
    );
  addon = createRequire(import.meta.url)(found) as { NativeSegment: NativeSegmentClass; VERSION: number };
  return addon;
}
