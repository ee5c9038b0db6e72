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

export interface NativeError {
  code: string;
  message: string;
}

export interface NativeSegment {
  geometry(): Record<string, number | string>;
  bind(port: number): { port: number; failed: number; freed: number };
  bindDynamic(): { port: number; failed: number; freed: number };
  leave(port: number): void;
  submit(
    src: number,
    dst: number,
    op: number,
    flags: number,
    offset: number,
    size: number,
    target: string,
    data: Buffer | null,
    datalen: number,
  ): number;
  prepare(src: number, datalen: number): { handle: number; dataOff: number; dataLen: number };
  submitPrepared(
    handle: number,
    dst: number,
    op: number,
    flags: number,
    offset: number,
    size: number,
    target: string,
  ): void;
  accept(port: number, errors: NativeError[]): NativeRequest | null;
  respond(port: number, handle: number, state: number, serviced: number, data: Buffer | null): void;
  receive(port: number, errors: NativeError[]): NativeRequest | null;
  release(port: number, handle: number): void;
  startWaiter(port: number, wake: () => void): void;
  stopWaiter(port: number): void;
  refWaiter(port: number, ref: boolean): void;
  report(): unknown;
  recoverPort(port: number, force: boolean): { port: number; failed: number; freed: number };
  recoverLocks(pid: number): number;
  close(): void;
  heapBuffer(): ArrayBuffer;
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
