/**
 * What the restart tests share: fio through a mapped volume's NBD socket (fio's nbd engine, crc32c
 * verify), a writer that records what was acknowledged (../daemons/nbd-writer.py), reading a
 * volume back, and the check that no request is left in the segment.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { expect } from 'vitest';
import type { SegmentReport } from '../../packages/libxseg/src/segment/index.js';
import { ENV, type TestConfig, until, XSEG } from '../daemons/helpers.js';

export interface FioRun {
  child: ChildProcess;
  /** Resolves when fio exits: its status, JSON report and stderr. */
  done: Promise<FioResult>;
  running(): boolean;
}

export interface FioResult {
  code: number | null;
  stderr: string;
  /** I/O errors fio counted (the job's `error` is the first one's errno). */
  error: number;
  writes: number;
  reads: number;
  /** The longest a single write / read took (ms): the stall the client saw. */
  maxWriteMs: number;
  maxReadMs: number;
}

/**
 * fio on `uri` (nbd engine): random 4 KiB writes over `size` bytes at `iops` per second, depth
 * 8, each block checksummed (crc32c) and read back and checked 64 writes later
 * (`verify_backlog`) and at the end. Any I/O error or bad block fails the job.
 */
export function startFio(dir: string, uri: string, size: string, iops: number): FioRun {
  const child = spawn(
    'fio',
    [
      '--name=restart',
      '--ioengine=nbd',
      `--uri=${uri}`,
      '--rw=randwrite',
      '--bs=4k',
      `--size=${size}`,
      '--iodepth=8',
      `--rate_iops=${iops}`,
      '--verify=crc32c',
      '--verify_backlog=64',
      '--verify_fatal=1',
      '--output-format=json',
    ],
    { env: ENV, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  let exited = false;
  const done = new Promise<FioResult>((resolve) => {
    child.once('exit', (code) => {
      exited = true;
      const job = parseFio(out);
      resolve({
        code,
        stderr: err + (job ? '' : out),
        error: job?.error ?? -1,
        writes: job?.write.total_ios ?? 0,
        reads: job?.read.total_ios ?? 0,
        maxWriteMs: (job?.write.clat_ns.max ?? 0) / 1e6,
        maxReadMs: (job?.read.clat_ns.max ?? 0) / 1e6,
      });
    });
  });
  return { child, done, running: () => !exited };
}

interface FioJob {
  error: number;
  write: { total_ios: number; clat_ns: { max: number } };
  read: { total_ios: number; clat_ns: { max: number } };
}

function parseFio(out: string): FioJob | undefined {
  const at = out.indexOf('{');
  if (at < 0) return undefined;
  try {
    return (JSON.parse(out.slice(at)) as { jobs: FioJob[] }).jobs[0];
  } catch {
    return undefined;
  }
}

/** fio ran clean: exit 0, no I/O error, no verify failure, and it wrote and verified every block. */
export function expectClean(r: FioResult, blocks: number): void {
  expect(r.code, r.stderr).toBe(0);
  expect(r.error, r.stderr).toBe(0);
  expect(r.stderr).not.toMatch(/verify|bad magic|crc|Input\/output error/i);
  expect(r.writes).toBe(blocks);
  expect(r.reads).toBe(blocks);
}

export const SLOTS = 64;
export const SLOT = 64 * 1024;

/** What nbd-writer.py writes into `slot` for its `seq`-th write: (slot, seq) as two u32 LE, repeated. */
export function pattern(slot: number, seq: number): Buffer {
  return Buffer.alloc(SLOT, Buffer.from(new Uint32Array([slot, seq]).buffer));
}

export interface Writer {
  acks(): number;
  /** Failed writes with when they failed (Date.now()). */
  readonly errors: { at: number; text: string }[];
  /** When the last write was acknowledged (Date.now()). */
  lastAck(): number;
  /** Per slot, the last acknowledged seq (slots with a failed write after it are dropped). */
  readonly last: Map<number, number>;
  /** The longest time between two acknowledgements (ms) since `mark()`. */
  maxGapMs(): number;
  mark(): void;
  stop(): Promise<void>;
}

/** nbd-writer.py (4 connections, one write in flight each) on a mapped volume's socket. */
export function startWriter(sock: string, volume: string): Writer {
  const child = spawn(
    '/usr/bin/python3',
    [join(import.meta.dirname, '../daemons/nbd-writer.py'), sock, volume, String(SLOTS), String(SLOT)],
    { env: ENV, stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const last = new Map<number, number>();
  const errors: { at: number; text: string }[] = [];
  let acks = 0;
  let lastAck = Date.now();
  let maxGap = 0;
  let done = false;
  createInterface({ input: child.stdout as Readable }).on('line', (line) => {
    const [kind, a, b, ...rest] = line.split(' ');
    if (kind === 'done') done = true;
    else if (kind === 'err') {
      last.delete(Number(a));
      errors.push({ at: Date.now(), text: `${a} ${b} ${rest.join(' ')}` });
    } else if (kind === 'ack') {
      const now = Date.now();
      maxGap = Math.max(maxGap, now - lastAck);
      lastAck = now;
      last.set(Number(a), Number(b));
      acks++;
    }
  });
  return {
    acks: () => acks,
    errors,
    lastAck: () => lastAck,
    last,
    maxGapMs: () => maxGap,
    mark() {
      maxGap = 0;
      lastAck = Date.now();
    },
    async stop() {
      child.stdin?.end();
      try {
        await until(() => done || child.exitCode !== null, 30_000, 'the writer to finish');
      } finally {
        child.kill('SIGKILL');
      }
    },
  };
}

/**
 * Every slot's last acknowledged pattern reads back through `sock` (a fresh NBD connection); at
 * least `min` slots are checked.
 */
export function expectAcknowledged(
  c: TestConfig,
  sock: string,
  volume: string,
  last: Map<number, number>,
  min = SLOTS / 2,
): void {
  const dump = join(c.dir, `${volume}.dump`);
  const r = spawnSync('/usr/bin/nbdcopy', [`nbd+unix:///${volume}?socket=${sock}`, dump], {
    env: ENV,
    encoding: 'utf8',
  });
  expect(r.status, r.stderr).toBe(0);
  const data = readFileSync(dump);
  let checked = 0;
  for (const [slot, seq] of last) {
    expect(data.subarray(slot * SLOT, (slot + 1) * SLOT).equals(pattern(slot, seq)), `slot ${slot}`).toBe(
      true,
    );
    checked++;
  }
  expect(checked).toBeGreaterThanOrEqual(min);
}

/**
 * What `xseg <spec> reportall` says is clean: no request accepted and never answered, none
 * queued, no segment lock held.
 */
export function expectCleanSegment(c: TestConfig): void {
  const r = spawnSync(process.execPath, [XSEG, c.spec, 'reportall', '--json'], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  const rep = JSON.parse(r.stdout) as SegmentReport;
  expect({ accepted: rep.requests.accepted, corrupt: rep.requests.corrupt }).toEqual({
    accepted: 0,
    corrupt: 0,
  });
  expect(rep.locks.filter((l) => l.ownerPid !== 0)).toEqual([]);
  const busy = rep.ports.filter((p) => p.requestQueue + p.replyQueue > 0).map((p) => p.port);
  expect(busy, 'ports with requests or replies queued').toEqual([]);
}

/** The pid of the endpoint serving `volume` (its run-state entry). */
export function endpointPid(c: TestConfig, volume: string): number {
  return (JSON.parse(readFileSync(join(c.runDir, `${volume}.json`), 'utf8')) as { pid: number }).pid;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
