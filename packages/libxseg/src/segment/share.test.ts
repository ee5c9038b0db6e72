// The segment's mode and group: created user and group read-write whatever the umask, never for
// others; `Segment.share` gives it and its doorbells to an account (Archipelago's USER/GROUP).
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { Segment } from './index.js';

const name = `xsegshare${process.pid}`;
const spec = `posix:${name}:8:16:4:12`;
afterEach(() => {
  try {
    Segment.destroy(name);
  } catch {
    // not there
  }
});

const mode = (p: string) => (statSync(p).mode & 0o7777).toString(8);

describe('segment permissions', () => {
  it('is created 0660 and its doorbells 0660 in a 2770 directory, whatever the umask', () => {
    const old = process.umask(0o077);
    let seg: Segment | undefined;
    try {
      seg = Segment.create(spec);
      seg.bindPort(1).onRequest(() => {});
    } finally {
      process.umask(old);
    }
    try {
      expect(mode(`/dev/shm/${name}`)).toBe('660');
      expect(mode(`/dev/shm/${name}.bell`)).toBe('2770');
      expect(readdirSync(`/dev/shm/${name}.bell`).map((f) => mode(`/dev/shm/${name}.bell/${f}`))).toEqual([
        '660',
      ]);
    } finally {
      seg?.close();
    }
  });

  it.skipIf(process.getuid?.() !== 0)('share() gives the segment and its doorbells to an account', () => {
    const uid = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }));
    const gid = Number(execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8' }));
    const seg = Segment.create(spec);
    seg.bindPort(1).onRequest(() => {});
    try {
      Segment.share(name, { uid, gid });
      for (const p of [`/dev/shm/${name}`, `/dev/shm/${name}.bell`])
        expect([statSync(p).uid, statSync(p).gid]).toEqual([uid, gid]);
      expect(statSync(`/dev/shm/${name}.bell/1`).gid).toBe(gid);
      expect(() => Segment.share(`${name}x`, { uid, gid })).toThrow(/chown\/chmod/);
    } finally {
      seg.close();
    }
  });
});
