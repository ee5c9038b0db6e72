/**
 * Crash points of `import-diff` (diff-transfer.ts `importDiff`): stopped by a kill after each of
 * its store changes (every later call fails, nothing is closed), or by the failure of one of its
 * blocker calls of any kind (every 9th by default, each with ARCHIP_CRASH_FULL=1; the process goes
 * on and ends the command), the next
 * command finds the volume wholly as it was (at the from-snapshot) or wholly as the stream makes
 * it, the from-snapshot unchanged, the to-snapshot absent or complete; a gc then frees nothing a
 * live map or trash entry names, and importing again ends with the new contents.
 */
import { createHash, randomBytes } from 'node:crypto';
import { cp, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Blocker } from '@archipelago/blocker';
import { FileBlocker } from '@archipelago/blocker-file';
import { Composer } from '@archipelago/composer';
import { ArchipelagoError } from '@archipelago/libxseg';
import { ObjFlag } from '@archipelago/mapfile';
import { collectGarbage, Mapper } from '@archipelago/mapper';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportDiff, importDiff, stagingNames } from './diff-transfer.js';
import { hostIdentity } from './sections.js';
import { Session } from './session.js';
import type { EmbeddedRuntime } from './types.js';
import { snapshotVolume } from './volumes.js';

const BS = 4096;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex').slice(0, 16);

let dir: string;
let src: string;
let dst: string;
let full: string;
let incr: string;
/** Bytes of s1 and s2 (the source's). */
let s1: string;
let s2: string;
/** Calls and changes a whole import makes. */
let calls: number;
let changes: number;

const CHANGES = new Set(['write', 'writeFull', 'copy', 'delete', 'acquire', 'release', 'renew', 'breakLock']);
const CALLS = new Set([
  ...CHANGES,
  'read',
  'readInto',
  'info',
  'exists',
  'list',
  'requestRelease',
  'lockInfo',
  'lockOwner',
  'hash',
]);

/**
 * Both blockers of one process, their calls counted together: `fail` fails the k-th call only;
 * `crash` lets the k-th change through and fails every call after it (the process is dead).
 */
class Tripwire {
  readonly calls: string[] = [];
  changes = 0;
  dead = false;
  constructor(
    readonly mode: 'fail' | 'crash' | null,
    readonly k: number,
  ) {}

  wrap(b: Blocker): Blocker {
    return new Proxy(b, {
      get: (target, prop) => {
        const v: unknown = Reflect.get(target, prop, target);
        if (typeof v !== 'function') return v;
        if (typeof prop !== 'string' || !CALLS.has(prop)) return v.bind(target);
        return (...args: unknown[]) => {
          const what = `${prop} ${String(args[0] ?? '')}`;
          this.calls.push(what);
          const fails =
            this.dead || (this.mode === 'fail' && this.calls.length === this.k)
              ? new ArchipelagoError('EIO', `injected: ${what}`)
              : null;
          if (!fails && CHANGES.has(prop) && ++this.changes === this.k && this.mode === 'crash')
            this.dead = true;
          if (fails) {
            if (prop === 'list')
              return { [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(fails) }) };
            return Promise.reject(fails);
          }
          return v.apply(target, args);
        };
      },
    });
  }
}

/** A Session of the installation whose runtime's blockers go through `wire`. */
class WiredSession extends Session {
  private rt: Promise<EmbeddedRuntime> | undefined;
  constructor(
    conf: string,
    private readonly root: string,
    private readonly wire: Tripwire,
  ) {
    super({ config: conf });
  }
  override runtime(): Promise<EmbeddedRuntime> {
    this.rt ??= (async () => {
      const identity = hostIdentity(this.configuration());
      const blockerm = this.wire.wrap(new FileBlocker({ dir: join(this.root, 'maps'), identity }));
      const blockerb = this.wire.wrap(new FileBlocker({ dir: join(this.root, 'blocks'), identity }));
      const mapper = new Mapper({ blockerm, blockerb, lockTimeoutMs: 500 });
      const composer = new Composer({ mapper, blockerb });
      return {
        wiring: 'embedded',
        config: this.configuration().config,
        configPath: null,
        blockerm,
        blockerb,
        mapper,
        composer,
        identity,
        close: async () => {
          if (!this.wire.dead) await mapper.close().catch(() => {});
          await Promise.allSettled([blockerm.close(), blockerb.close()]);
        },
      } satisfies EmbeddedRuntime;
    })();
    return this.rt;
  }
  override async close(): Promise<void> {
    const rt = await this.rt?.catch(() => null);
    await rt?.close();
  }
}

/** The configuration file of installation `name` under `dir` (file blockers). */
async function installation(name: string): Promise<string> {
  const blocker = (role: string) =>
    `[${role}]\ntype = file_blocker\narchip_dir = ${join(dir, name, role === 'blockerm' ? 'maps' : 'blocks')}\n`;
  const conf = join(dir, `${name}.conf`);
  await writeFile(
    conf,
    `[ARCHIPELAGO]\nUSER = root\nGROUP = root\n[XSEG]\n[PEERS]\n${blocker('blockerb')}${blocker('blockerm')}`,
  );
  return conf;
}

/** `fn` in a Session of `conf` (one command's worth), closed after it. */
const withSession = <T>(conf: string, fn: (s: Session) => Promise<T>): Promise<T> => {
  const s = new Session({ config: conf });
  return fn(s).finally(() => s.close());
};

const bytesOf = (s: Session, name: string) =>
  s.runtime().then(async (rt) => sha(await rt.composer.read(name, 0, (await rt.mapper.info(name)).size)));

/** Runs the import of `incr` into `copy` with `wire`; its error, if any. */
async function importWith(wire: Tripwire): Promise<unknown> {
  const s = new WiredSession(dst, join(dir, 'dst'), wire);
  try {
    await importDiff(s, incr, 'copy');
    return null;
  } catch (e) {
    return e;
  } finally {
    await s.close();
  }
}

const restore = async () => {
  await rm(join(dir, 'dst'), { recursive: true, force: true });
  await cp(join(dir, 'dst.saved'), join(dir, 'dst'), { recursive: true });
};

beforeAll(async () => {
  // /dev/shm when there is one: the crash is a process's, not a power cut, and the store is
  // copied back before every run.
  const base = (await stat('/dev/shm').catch(() => null)) ? '/dev/shm' : tmpdir();
  dir = await mkdtemp(join(base, 'archip-diff-crash-'));
  src = await installation('src');
  dst = await installation('dst');
  full = join(dir, 'full.diff');
  incr = join(dir, 'incr.diff');
  // src: vol (8 blocks of 4 KiB) with data in blocks 0-2 → s1; then block 1 partly rewritten,
  // block 2 zeroed, block 5 written, grown to 10 blocks, block 9 written → s2.
  await withSession(src, async (s) => {
    const rt = await s.runtime();
    await rt.mapper.create('vol', { size: 8 * BS, blocksize: BS });
    await rt.composer.write('vol', 0, randomBytes(3 * BS));
    await snapshotVolume(s, 'vol', 's1');
    await rt.composer.write('vol', BS + 100, randomBytes(1000));
    await rt.composer.writeZeroes('vol', 2 * BS, BS);
    await rt.composer.write('vol', 5 * BS, randomBytes(BS));
    await rt.mapper.resize('vol', 10 * BS);
    await rt.composer.write('vol', 9 * BS, randomBytes(BS));
    await snapshotVolume(s, 'vol', 's2');
    await exportDiff(s, 's1', full);
    await exportDiff(s, 's2', incr, { fromSnap: 's1' });
    s1 = await bytesOf(s, 's1');
    s2 = await bytesOf(s, 's2');
  });
  // dst: copy, at s1 (a full import), saved.
  await withSession(dst, async (s) => {
    const rt = await s.runtime();
    await rt.mapper.create('copy', { size: BS, blocksize: BS });
    await importDiff(s, full, 'copy');
  });
  await cp(join(dir, 'dst'), join(dir, 'dst.saved'), { recursive: true });
  const wire = new Tripwire(null, 0);
  expect(await importWith(wire)).toBeNull();
  calls = wire.calls.length;
  changes = wire.changes;
  await withSession(dst, async (s) => {
    expect(await bytesOf(s, 'copy')).toBe(s2);
    expect(await bytesOf(s, 's2')).toBe(s2);
  });
}, 60_000);

afterAll(() => rm(dir, { recursive: true, force: true }));

/** Data objects that a live map or a trash entry names and the store lacks. */
async function missingNamed(rt: EmbeddedRuntime): Promise<string[]> {
  const out: string[] = [];
  const maps = (await rt.mapper.list()).map((v) => v.name);
  for (const name of [...maps, ...(await rt.mapper.listTrash()).map((t) => t.entry)]) {
    for (const e of await rt.mapper.entries(name)) {
      if (!(e.flags & ObjFlag.ZERO) && !(await rt.blockerb.exists(e.name))) out.push(`${name}: ${e.name}`);
    }
  }
  return out;
}

/**
 * The next command's view (one session): what the volume and the snapshots read, then a gc, then
 * the same again; with `retry`, an import after it (when the volume is still at s1).
 */
async function check(at: string, retry: boolean): Promise<void> {
  const again = await withSession(dst, async (s) => {
    const rt = (await s.runtime()) as EmbeddedRuntime;
    const look = async () => {
      const names = (await rt.mapper.list()).map((v) => v.name).filter((n) => !n.startsWith('.import-diff.'));
      return {
        names,
        copy: await bytesOf(s, 'copy'),
        s1: await bytesOf(s, 's1'),
        s2: names.includes('s2') ? await bytesOf(s, 's2') : null,
        // (a kill between a write's map entry and its data leaves an entry naming nothing yet,
        // which reads as zeros, as before the write: gc must not add to these)
        missing: await missingNamed(rt),
      };
    };
    const before = await look();
    expect([s1, s2], `${at}: copy reads neither s1 nor s2`).toContain(before.copy);
    expect(before.s1, `${at}: s1 changed`).toBe(s1);
    expect([null, s2], `${at}: s2 is incomplete`).toContain(before.s2);
    expect(before.names, `${at}: maps`).toEqual(before.s2 ? ['copy', 's1', 's2'] : ['copy', 's1']);
    await collectGarbage({
      blockerm: rt.blockerm,
      blockerb: rt.blockerb,
      graceMs: 0,
      now: () => Date.now() + 3_600_000,
    });
    expect(await look(), `${at}: after a gc`).toEqual(before);
    return retry && before.copy === s1;
  });
  if (!again) return;
  // Importing again clears what the stopped import left and applies the stream.
  expect(await importWith(new Tripwire(null, 0)), `${at}: importing again`).toBeNull();
  await withSession(dst, async (s) => {
    expect(await bytesOf(s, 'copy'), `${at}: after importing again`).toBe(s2);
    expect((await (await s.runtime()).mapper.list()).map((v) => v.name)).toEqual(['copy', 's1', 's2']);
  });
}

describe('import-diff crash points', () => {
  it('the staging names are valid volume names, for any volume name', () => {
    expect(stagingNames('vm1')).toEqual({
      base: '.import-diff.vm1.base',
      work: '.import-diff.vm1.work',
      next: '.import-diff.vm1.next',
    });
    expect(stagingNames('x'.repeat(82)).base).toMatch(/^\.import-diff\.[0-9a-f]{24}\.base$/);
  });

  // Every call of an import (about 260) takes minutes: by default every STRIDE-th one (and the
  // kills below stop it after every change); ARCHIP_CRASH_FULL=1 fails each in turn.
  const stride = process.env.ARCHIP_CRASH_FULL === '1' ? 1 : 9;
  it(`each ${stride === 1 ? '' : `${stride}th `}of its blocker calls failing`, {
    timeout: 600_000,
  }, async () => {
    expect(calls).toBeGreaterThan(changes);
    for (let k = 1; k <= calls; k += stride) {
      await restore();
      const wire = new Tripwire('fail', k);
      const e = await importWith(wire);
      await check(
        `call ${k}/${calls} (${wire.calls[k - 1]}) failing (${e ? String(e) : 'no error'})`,
        k % 16 === 0,
      );
    }
  });

  it('killed after each of its store changes', { timeout: 600_000 }, async () => {
    for (let k = 1; k <= changes; k++) {
      await restore();
      const wire = new Tripwire('crash', k);
      await importWith(wire);
      expect(wire.dead).toBe(true);
      await check(`kill after change ${k}/${changes}`, k % 8 === 0);
    }
  });
});
