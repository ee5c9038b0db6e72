import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArchipelagoError } from '@archipelago/libxseg';
import { afterAll, describe, expect, it } from 'vitest';
import { checkPeerOptions } from './options.js';
import { pidAlive, readPidfile, removePidfile, writePidfile } from './pidfile.js';
import { decodeError, encodeError } from './protocol/wire.js';

const dir = mkdtempSync(join(tmpdir(), 'archip-pidfile-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('pidfile', () => {
  it('creates, refuses a live owner, replaces a stale one, removes only its own', async () => {
    const path = join(dir, 'run/x.pid');
    expect(readPidfile(path)).toEqual({ state: 'absent' });
    const live = spawn('sleep', ['30']);
    try {
      const livePid = live.pid as number;
      expect(writePidfile(path, livePid)).toEqual({ replacedStale: false });
      expect(readPidfile(path)).toEqual({ state: 'running', pid: livePid });
      let err: unknown;
      try {
        writePidfile(path);
      } catch (e) {
        err = e;
      }
      expect(ArchipelagoError.is(err, 'EBUSY')).toBe(true);
      expect((err as Error).message).toMatch(/already running/);
      removePidfile(path); // not ours: kept
      expect(readPidfile(path).state).toBe('running');
    } finally {
      live.kill('SIGKILL');
      await new Promise((r) => live.once('exit', r));
    }
    expect(readPidfile(path).state).toBe('stale');
    expect(writePidfile(path).replacedStale).toBe(live.pid);
    expect(readFileSync(path, 'utf8')).toBe(`${process.pid}\n`);
    removePidfile(path);
    expect(readPidfile(path).state).toBe('absent');
    writeFileSync(path, 'garbage');
    expect(readPidfile(path)).toEqual({ state: 'stale', pid: null });
    expect(writePidfile(path).replacedStale).toBe(null);
  });

  it('knows live and dead pids', () => {
    expect(pidAlive(process.pid)).toBe(true);
    expect(pidAlive(0)).toBe(false);
    expect(pidAlive(2 ** 22 + 11)).toBe(false);
  });
});

describe('wire errors', () => {
  it('round-trips an ArchipelagoError with its code and details', () => {
    const e = decodeError(
      encodeError(new ArchipelagoError('ELOCKED', 'held', { details: { owner: 'h_1' } })),
      'x',
    );
    expect([e.code, e.message, e.details.owner]).toEqual(['ELOCKED', 'held', 'h_1']);
    expect(decodeError(encodeError(new RangeError('bad')), 'x').code).toBe('EINVAL');
    expect(decodeError(encodeError(new Error('boom')), 'x').code).toBe('EIO');
  });

  it('gives EIO for a failure without an error payload (failed back by the segment)', () => {
    const e = decodeError(Buffer.from('user data'), 'write x');
    expect(e.code).toBe('EIO');
    expect(e.details.failedBySegment).toBe(true);
    expect(decodeError(Buffer.from('ARCHERR1{not json'), 'x').code).toBe('EIO');
    expect(decodeError(Buffer.from('ARCHERR1{"code":"NOPE","message":"m"}'), 'x').code).toBe('EIO');
  });
});

describe('peer options', () => {
  const good = {
    role: 'blockerb',
    segment: { name: 's', dynports: 16, ports: 32, sizeMiB: 8 },
    portStart: 1,
    portEnd: 2,
    nrOps: 4,
    pidfile: '/tmp/p',
    logfile: '/tmp/l',
    logLevel: 2,
    blocker: { type: 'file_blocker', dir: '/tmp/d' },
  };
  it('accepts resolved options and refuses bad ones with EINVAL_CONFIG', () => {
    expect(checkPeerOptions(good).portEnd).toBe(2);
    for (const bad of [
      null,
      { ...good, portStart: 16 },
      { ...good, portEnd: 0 },
      { ...good, logLevel: 4 },
      { ...good, segment: { ...good.segment, dynports: 32 } },
      { ...good, blocker: { type: 'rados_blocker', dir: '/x' } },
      { ...good, pidfile: '' },
    ]) {
      expect(() => checkPeerOptions(bad)).toThrow(/peer options/);
    }
  });
});
