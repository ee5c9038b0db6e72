/**
 * `vlmc diff`, `export-diff` and `import-diff` in process, through a Session on a file-blocker
 * configuration (embedded wiring): a full and an incremental diff move a volume's history to a
 * second installation byte for byte, and bad streams or mismatched targets change nothing.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ArchipelagoError } from '@archipelago/libxseg';
import { RbdDiffWriter } from '@archipelago/mapfile';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diffVolume, exportDiff, importDiff } from './diff-transfer.js';
import { Session } from './session.js';
import { createVolume, listVolumes, snapshotVolume } from './volumes.js';

const MiB = 1024 * 1024;
const BS = 4 * MiB;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
let dir: string;

async function installation(name: string): Promise<string> {
  const d = join(dir, name);
  const conf = join(dir, `${name}.conf`);
  await writeFile(
    conf,
    `[ARCHIPELAGO]\nUSER = root\nGROUP = root\n[XSEG]\n[PEERS]\n[blockerb]\ntype = file_blocker\narchip_dir = ${d}/blocks\n[blockerm]\ntype = file_blocker\narchip_dir = ${d}/maps\n`,
  );
  return conf;
}

/** Runs `fn` in a fresh Session (one command's worth), closed afterwards. */
async function withSession<T>(conf: string, fn: (s: Session) => Promise<T>): Promise<T> {
  const s = new Session({ config: conf });
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

const bytesOf = (conf: string, name: string) =>
  withSession(conf, async (s) => {
    const rt = await s.runtime();
    return rt.composer.read(name, 0, (await rt.mapper.info(name)).size);
  });
const names = (conf: string) => withSession(conf, async (s) => (await listVolumes(s)).map((v) => v.name));

async function codeOf(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    if (ArchipelagoError.isInstance(e)) return { code: e.code, message: e.message };
    throw e;
  }
  throw new Error('expected a failure');
}

let src: string;
let dst: string;
let full: Buffer;
let incr: Buffer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archip-diff-'));
  src = await installation('src');
  dst = await installation('dst');
  // src: vol (5 blocks, the last partial) with data in blocks 0-2 → s1; then block 1 partly
  // rewritten, block 2 discarded, block 4 written, grown by 3 MiB → s2.
  await withSession(src, async (s) => {
    const rt = await s.runtime();
    await createVolume(s, 'vol', { size: 4 * BS + MiB });
    await rt.composer.write('vol', 0, randomBytes(3 * BS));
    await snapshotVolume(s, 'vol', 's1');
    await rt.composer.write('vol', BS + 4096, randomBytes(8192));
    await rt.composer.writeZeroes('vol', 2 * BS, BS);
    await rt.composer.write('vol', 4 * BS, randomBytes(MiB));
    await rt.mapper.resize('vol', 5 * BS);
    await rt.composer.write('vol', 4 * BS + 2 * MiB, randomBytes(4096));
    await snapshotVolume(s, 'vol', 's2');
  });
}, 60_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('diff, export-diff, import-diff', () => {
  it('vlmc diff: the changed extents from the maps, data and zero', async () => {
    const d = await withSession(src, (s) => diffVolume(s, 's2', { fromSnap: 's1' }));
    expect(d.extents).toEqual([
      { offset: BS, length: BS, zero: false },
      { offset: 2 * BS, length: BS, zero: true },
      { offset: 4 * BS, length: BS, zero: false },
    ]);
    expect(d).toMatchObject({ size: 5 * BS, dataBytes: 2 * BS, zeroBytes: BS, fromSnap: 's1' });
    const all = await withSession(src, (s) => diffVolume(s, 's1'));
    expect(all.extents).toEqual([{ offset: 0, length: 3 * BS, zero: false }]);
    expect((await withSession(src, (s) => diffVolume(s, 'vol', { fromSnap: 's2' }))).extents).toEqual([]);
    expect((await codeOf(withSession(src, (s) => diffVolume(s, 's2', { fromSnap: 'vol' })))).message).toMatch(
      /is a volume, not a snapshot/,
    );
  });

  it('a full and an incremental diff rebuild s1 and s2 in another installation, byte for byte', async () => {
    const fullFile = join(dir, 'full.diff');
    const st = await withSession(src, (s) => exportDiff(s, 's1', fullFile));
    expect(st).toMatchObject({
      fromSnap: null,
      toSnap: 's1',
      size: 4 * BS + MiB,
      dataBytes: 3 * BS,
      zeroBytes: 0,
    });
    full = await readFile(fullFile);
    expect(full.length).toBe(st.streamBytes);
    const chunks: Buffer[] = [];
    const out = new (await import('node:stream')).Writable({
      write(c, _e, cb) {
        chunks.push(c);
        cb();
      },
    });
    const st2 = await withSession(src, (s) => exportDiff(s, 's2', out, { fromSnap: 's1' }));
    incr = Buffer.concat(chunks);
    // Only the 4 KiB granules that changed go: 8 KiB of block 1, 1 MiB + 4 KiB of block 4 (the
    // rest of both blocks reads as it did); block 2, discarded, is one zero record.
    expect(st2).toMatchObject({
      file: '-',
      fromSnap: 's1',
      toSnap: 's2',
      dataBytes: 8192 + MiB + 4096,
      zeroBytes: BS,
    });
    expect(incr.subarray(0, 12).toString()).toBe('rbd diff v1\n');

    await withSession(dst, (s) => createVolume(s, 'copy', { size: MiB }));
    const r1 = await withSession(dst, (s) => importDiff(s, fullFile, 'copy'));
    expect(r1).toMatchObject({ toSnap: 's1', sizeBefore: MiB, size: 4 * BS + MiB, dataBytes: 3 * BS });
    // From stdin: spooled, checked, applied.
    const r2 = await withSession(dst, (s) => importDiff(s, Readable.from([incr]), 'copy'));
    expect(r2).toMatchObject({ file: '-', fromSnap: 's1', toSnap: 's2', size: 5 * BS });
    expect(await names(dst)).toEqual(['copy', 's1', 's2']);
    expect(sha(await bytesOf(dst, 's1'))).toBe(sha(await bytesOf(src, 's1')));
    expect(sha(await bytesOf(dst, 's2'))).toBe(sha(await bytesOf(src, 's2')));
    expect(sha(await bytesOf(dst, 'copy'))).toBe(sha(await bytesOf(src, 's2')));
  });

  it('malformed or truncated streams change nothing, and say what is wrong and where', async () => {
    const before = sha(await bytesOf(dst, 'copy'));
    const list = await names(dst);
    // A diff from s2 that would change the volume: valid, then broken in several ways.
    const next = join(dir, 'next.diff');
    await withSession(src, async (s) => {
      const rt = await s.runtime();
      await rt.composer.write('vol', 0, randomBytes(4096));
      await snapshotVolume(s, 'vol', 's3');
      await exportDiff(s, 's3', next, { fromSnap: 's2' });
    });
    const good = await readFile(next);
    const tag = Buffer.from(good);
    tag[good.indexOf('w', 12)] = 0x71; // 'q'
    const past = Buffer.from(good);
    past.writeBigUInt64LE(BigInt(10 * BS), good.indexOf('w', 12) + 9); // length past the end
    const cases: Array<[string, Buffer, RegExp]> = [
      [
        'cut',
        good.subarray(0, good.length - 100),
        /truncated: the stream ends at byte \d+, inside the \d+ data bytes of record 'w'/,
      ],
      [
        'no end',
        good.subarray(0, good.length - 1),
        /truncated: the stream ends at byte \d+ without its end record/,
      ],
      ['bad tag', tag, /unknown record tag 0x71 at byte \d+/],
      ['past', past, /record 'w' at byte \d+ covers 0\+41943040, past the image size/],
      [
        'header',
        Buffer.concat([Buffer.from('rbd diff v0\n'), good.subarray(12)]),
        /not an RBD diff v1 stream/,
      ],
    ];
    for (const [what, bytes, msg] of cases) {
      const f = join(dir, `${what}.diff`);
      await writeFile(f, bytes);
      const err = await codeOf(withSession(dst, (s) => importDiff(s, f, 'copy')));
      expect(err.code, what).toBe('EINVAL');
      expect(err.message, what).toMatch(msg);
      expect(err.message, what).toMatch(/nothing was changed/);
      const errStdin = await codeOf(withSession(dst, (s) => importDiff(s, Readable.from([bytes]), 'copy')));
      expect(errStdin.message, what).toMatch(msg);
    }
    expect(sha(await bytesOf(dst, 'copy'))).toBe(before);
    expect(await names(dst)).toEqual(list);
    // The good one applies.
    await withSession(dst, (s) => importDiff(s, next, 'copy'));
    expect(sha(await bytesOf(dst, 's3'))).toBe(sha(await bytesOf(src, 's3')));
  });

  it('refuses a target not at the from-snapshot, a to-snapshot that exists, a missing from-snapshot', async () => {
    const inc = join(dir, 'incr.diff');
    await writeFile(inc, incr); // s1 → s2
    await withSession(dst, (s) => createVolume(s, 'other', { snap: 's1' }));
    // s2 exists already in dst.
    expect(await codeOf(withSession(dst, (s) => importDiff(s, inc, 'other')))).toMatchObject({
      code: 'EEXIST_VOLUME',
      message: expect.stringMatching(/ends at snapshot "s2", which exists already/),
    });
    const fresh = await installation('fresh');
    await withSession(fresh, (s) => createVolume(s, 'v', { size: MiB }));
    expect(await codeOf(withSession(fresh, (s) => importDiff(s, inc, 'v')))).toMatchObject({
      code: 'ENOENT_VOLUME',
      message: expect.stringMatching(/starts from snapshot "s1", which does not exist/),
    });
    // A volume written after its snapshot is no longer at it.
    await withSession(fresh, (s) => importDiff(s, Readable.from([full]), 'v'));
    await withSession(fresh, async (s) => (await s.runtime()).composer.write('v', 0, Buffer.alloc(512, 7)));
    const before = sha(await bytesOf(fresh, 'v'));
    expect(await codeOf(withSession(fresh, (s) => importDiff(s, inc, 'v')))).toMatchObject({
      code: 'EINVAL',
      message: expect.stringMatching(/"v" has changed since/),
    });
    // A size of 0 (rbd would resize to it) is refused before the volume is touched.
    const w = new RbdDiffWriter();
    const empty = Buffer.concat([w.imageSize(0), w.end()]);
    expect(await codeOf(withSession(fresh, (s) => importDiff(s, Readable.from([empty]), 'v')))).toMatchObject(
      {
        code: 'EINVAL_SIZE',
        message: expect.stringMatching(/the size 0.*nothing was changed/),
      },
    );
    expect(sha(await bytesOf(fresh, 'v'))).toBe(before);
    expect(await names(fresh)).toEqual(['s1', 'v']);
  });
});
