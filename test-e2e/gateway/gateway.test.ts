/**
 * The HTTP file gateway end to end: a gateway on file blockers in a temp directory, driven by
 * curl and by the real `swift` client (Debian python3-swiftclient), plus hostile input.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileBlocker } from '../../packages/blocker-file/src/index.js';
import { type Gateway, startGateway } from '../../packages/gateway/src/index.js';
import { objectKey } from '../../packages/gateway/src/names.js';
import { merkleRoot, pithosBlockHash, ZERO_BLOCK } from '../../packages/mapfile/src/index.js';
import { collectGarbage, Mapper, storeUsage } from '../../packages/mapper/src/index.js';
import { curl, rawExchange, run, SWIFT_ENV, storedBytes } from './helpers.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MiB = 1024 * 1024;
const BS = MiB; // the gateway's block size here (Pithos tests use small blocks too)
const TOKEN = 'AUTH_tk-e2e-test';
const OTHER = 'AUTH_tk-e2e-other';

let dir: string;
let gw: Gateway;
let maps: FileBlocker;
let blocks: FileBlocker;
let mapper: Mapper;
let base: string;

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const auth = ['-H', `X-Auth-Token: ${TOKEN}`];
const hashesOf = (b: Buffer, bs = BS) => {
  const out: string[] = [];
  for (let i = 0; i < b.length; i += bs) out.push(pithosBlockHash(b.subarray(i, i + bs)));
  return out;
};

async function file(name: string, data: Buffer): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, data);
  return p;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archip-gw-e2e-'));
  maps = new FileBlocker({ dir: join(dir, 'data', 'maps'), identity: 'gw_e2e' });
  blocks = new FileBlocker({ dir: join(dir, 'data', 'blocks'), identity: 'gw_e2e' });
  mapper = new Mapper({ blockerm: maps, blockerb: blocks });
  gw = await startGateway({
    blockerm: maps,
    blockerb: blocks,
    mapper,
    blocksize: BS,
    maxObjectSize: 256 * MiB,
    bridgeAccounts: ['test'],
    auth: {
      users: [{ user: 'test:tester', key: 'testing', account: 'test', token: TOKEN }],
      tokens: { [OTHER]: 'other' },
    },
  });
  base = gw.url;
  for (const c of ['c1', 'dedup', 'swift-c', 'hostile', 'bridge']) {
    const r = await curl(['-X', 'PUT', ...auth, `${base}/test/${c}`]);
    expect(r.status).toBe(201);
  }
});

afterAll(async () => {
  await gw?.close();
  await mapper?.close();
  await maps?.close();
  await blocks?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('gateway: auth', () => {
  it('hands out a storage URL and token for the right key only', async () => {
    const ok = await curl([
      '-H',
      'X-Auth-User: test:tester',
      '-H',
      'X-Auth-Key: testing',
      `${base}/auth/v1.0`,
    ]);
    expect(ok.status).toBe(200);
    expect(ok.headers['x-storage-url']).toBe(`${base}/test`);
    expect(ok.headers['x-auth-token']).toBe(TOKEN);
    const bad = await curl(['-H', 'X-Auth-User: test:tester', '-H', 'X-Auth-Key: nope', `${base}/auth/v1.0`]);
    expect(bad.status).toBe(401);
    expect((await curl([`${base}/test/c1`])).status).toBe(401);
    expect((await curl(['-H', 'X-Auth-Token: forged', `${base}/test/c1`])).status).toBe(401);
    expect((await curl(['-H', `X-Auth-Token: ${OTHER}`, `${base}/test/c1`])).status).toBe(403);
    expect((await curl(['-H', `X-Auth-Token: ${OTHER}`, `${base}/other`])).status).toBe(204);
  });
});

describe('gateway: objects over curl', () => {
  const data = Buffer.concat([
    randomBytes(2 * BS),
    Buffer.alloc(BS),
    randomBytes(BS / 2),
    Buffer.alloc(1000),
  ]);
  let path: string;

  beforeAll(async () => {
    path = await file('obj.bin', data);
    const put = await curl(['-T', path, ...auth, `${base}/test/c1/dir/obj.bin`]);
    expect(put.status).toBe(201);
    expect(put.headers.etag).toBe(md5(data));
    expect(put.headers['x-object-hash']).toBe(merkleRoot(hashesOf(data)));
  });

  it('GET and HEAD return the bytes, ETag (MD5) and X-Object-Hash (Merkle root)', async () => {
    const get = await curl([...auth, `${base}/test/c1/dir/obj.bin`]);
    expect(get.status).toBe(200);
    expect(get.body.equals(data)).toBe(true);
    expect(get.headers['x-object-hash']).toBe(merkleRoot(hashesOf(data)));
    expect(get.headers['accept-ranges']).toBe('bytes');
    const head = await curl(['-I', ...auth, `${base}/test/c1/dir/obj.bin`]);
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(data.length));
    expect(head.headers.etag).toBe(md5(data));
    expect(head.body.length).toBe(0);
  });

  it('serves single ranges (first-last, open, suffix, across blocks)', async () => {
    for (const [spec, from, to] of [
      ['0-0', 0, 0],
      ['100-199', 100, 199],
      [`${BS - 10}-${2 * BS + 10}`, BS - 10, 2 * BS + 10],
      [`${data.length - 5}-`, data.length - 5, data.length - 1],
      ['-700', data.length - 700, data.length - 1],
      [`10-${data.length * 2}`, 10, data.length - 1],
    ] as const) {
      const r = await curl(['-H', `Range: bytes=${spec}`, ...auth, `${base}/test/c1/dir/obj.bin`]);
      expect(r.status, spec).toBe(206);
      expect(r.headers['content-range']).toBe(`bytes ${from}-${to}/${data.length}`);
      expect(r.body.equals(data.subarray(from, to + 1)), spec).toBe(true);
    }
    const bad = await curl(['-H', `Range: bytes=${data.length}-`, ...auth, `${base}/test/c1/dir/obj.bin`]);
    expect(bad.status).toBe(416);
    expect(bad.headers['content-range']).toBe(`bytes */${data.length}`);
    // A malformed Range is ignored: the whole body.
    const junk = await curl(['-H', 'Range: bytes=zz', ...auth, `${base}/test/c1/dir/obj.bin`]);
    expect(junk.status).toBe(200);
    expect(junk.body.length).toBe(data.length);
  });

  it('serves multiple ranges as multipart/byteranges', async () => {
    const ranges: Array<[number, number]> = [
      [0, 9],
      [BS - 3, BS + 2],
      [3 * BS + 5, 3 * BS + 5000],
    ];
    const r = await curl([
      '-H',
      `Range: bytes=${ranges.map(([a, b]) => `${a}-${b}`).join(',')}`,
      ...auth,
      `${base}/test/c1/dir/obj.bin`,
    ]);
    expect(r.status).toBe(206);
    const m = /^multipart\/byteranges; boundary=(\S+)$/.exec(r.headers['content-type'] ?? '');
    expect(m).not.toBeNull();
    expect(Number(r.headers['content-length'])).toBe(r.body.length);
    const boundary = Buffer.from(`--${m![1]}`);
    let at = 0;
    for (const [a, b] of ranges) {
      at = r.body.indexOf(boundary, at);
      expect(at).toBeGreaterThanOrEqual(0);
      const headEnd = r.body.indexOf('\r\n\r\n', at);
      const head = r.body.subarray(at, headEnd).toString();
      expect(head).toContain(`Content-Range: bytes ${a}-${b}/${data.length}`);
      const part = r.body.subarray(headEnd + 4, headEnd + 4 + (b - a + 1));
      expect(part.equals(data.subarray(a, b + 1))).toBe(true);
      at = headEnd + 4 + (b - a + 1);
    }
    expect(r.body.subarray(at).toString()).toBe(`\r\n${boundary.toString()}--\r\n`);
  });

  it('round-trips the hashmap: GET ?hashmap, PUT ?hashmap elsewhere → the same file, no data sent', async () => {
    const hm = await curl([...auth, `${base}/test/c1/dir/obj.bin?hashmap&format=json`]);
    expect(hm.status).toBe(200);
    const json = JSON.parse(hm.body.toString());
    expect(json).toEqual({
      block_hash: 'sha256',
      block_size: BS,
      bytes: data.length,
      hashes: hashesOf(data),
    });
    expect(json.hashes[2]).toBe(ZERO_BLOCK);
    const before = await storedBytes(join(dir, 'data', 'blocks'));
    const put = await curl([
      '-X',
      'PUT',
      '-H',
      'Content-Type: application/json',
      '--data-binary',
      JSON.stringify({ bytes: json.bytes, hashes: json.hashes }),
      ...auth,
      `${base}/test/c1/copy.bin?hashmap`,
    ]);
    expect(put.status).toBe(201);
    expect(put.headers['x-object-hash']).toBe(merkleRoot(hashesOf(data)));
    expect(await storedBytes(join(dir, 'data', 'blocks'))).toBe(before);
    const get = await curl([...auth, `${base}/test/c1/copy.bin`]);
    expect(get.body.equals(data)).toBe(true);
  });

  it('answers 409 with the missing hashes, stores blocks by container POST (202), then 201', async () => {
    const fresh = Buffer.concat([randomBytes(BS), data.subarray(0, BS), randomBytes(BS / 4)]);
    const hashes = hashesOf(fresh);
    const hm = JSON.stringify({ bytes: fresh.length, hashes });
    const url = `${base}/test/c1/pithos.bin?hashmap`;
    const first = await curl([
      '-X',
      'PUT',
      '-H',
      'Content-Type: application/json',
      '--data-binary',
      hm,
      ...auth,
      url,
    ]);
    expect(first.status).toBe(409);
    expect(JSON.parse(first.body.toString())).toEqual([hashes[0], hashes[2]]);
    expect((await curl(['-I', ...auth, `${base}/test/c1/pithos.bin`])).status).toBe(404);
    // Upload the missing blocks (the block at index 1 exists already).
    const missing = Buffer.concat([fresh.subarray(0, BS), fresh.subarray(2 * BS)]);
    const post = await curl([
      '-X',
      'POST',
      '-H',
      'Content-Type: application/octet-stream',
      '--data-binary',
      `@${await file('missing.bin', missing)}`,
      ...auth,
      `${base}/test/c1?format=json`,
    ]);
    expect(post.status).toBe(202);
    expect(JSON.parse(post.body.toString())).toEqual([hashes[0], hashes[2]]);
    const second = await curl([
      '-X',
      'PUT',
      '-H',
      'Content-Type: application/json',
      '--data-binary',
      hm,
      ...auth,
      url,
    ]);
    expect(second.status).toBe(201);
    expect(second.headers['x-object-hash']).toBe(merkleRoot(hashes));
    expect((await curl([...auth, `${base}/test/c1/pithos.bin`])).body.equals(fresh)).toBe(true);
  });

  it('lists containers and objects (plain, json, prefix, delimiter, marker) and deletes', async () => {
    const acct = await curl([...auth, `${base}/test`]);
    expect(acct.body.toString().split('\n')).toEqual(expect.arrayContaining(['c1', 'dedup', 'swift-c']));
    const plain = await curl([...auth, `${base}/test/c1`]);
    expect(plain.body.toString()).toBe('copy.bin\ndir/obj.bin\npithos.bin\n');
    const delim = await curl([...auth, `${base}/test/c1?format=json&delimiter=/`]);
    expect(
      JSON.parse(delim.body.toString()).map((r: { name?: string; subdir?: string }) => r.name ?? r.subdir),
    ).toEqual(['copy.bin', 'dir/', 'pithos.bin']);
    const pre = await curl([...auth, `${base}/test/c1?prefix=dir/`]);
    expect(pre.body.toString()).toBe('dir/obj.bin\n');
    const mark = await curl([...auth, `${base}/test/c1?marker=copy.bin&limit=1`]);
    expect(mark.body.toString()).toBe('dir/obj.bin\n');
    const head = await curl(['-I', ...auth, `${base}/test/c1`]);
    expect(head.status).toBe(204);
    expect(head.headers['x-container-object-count']).toBe('3');
    expect((await curl(['-X', 'DELETE', ...auth, `${base}/test/c1`])).status).toBe(409);
    expect((await curl(['-X', 'DELETE', ...auth, `${base}/test/c1/copy.bin`])).status).toBe(204);
    expect((await curl(['-X', 'DELETE', ...auth, `${base}/test/c1/copy.bin`])).status).toBe(404);
    expect((await curl([...auth, `${base}/test/c1/copy.bin`])).status).toBe(404);
    // The other file with the same blocks is unaffected.
    expect((await curl([...auth, `${base}/test/c1/dir/obj.bin`])).body.equals(data)).toBe(true);
  });

  it('serves an empty object', async () => {
    const p = await file('empty', Buffer.alloc(0));
    const put = await curl(['-T', p, ...auth, `${base}/test/c1/empty`]);
    expect(put.status).toBe(201);
    expect(put.headers['x-object-hash']).toBe(ZERO_BLOCK);
    const get = await curl([...auth, `${base}/test/c1/empty`]);
    expect(get.status).toBe(200);
    expect(get.body.length).toBe(0);
    const hm = JSON.parse(
      (await curl([...auth, `${base}/test/c1/empty?hashmap&format=json`])).body.toString(),
    );
    expect(hm).toMatchObject({ bytes: 0, hashes: [ZERO_BLOCK] });
  });
});

describe('gateway: dedup', () => {
  it('stores the same 100 MiB uploaded twice once', { timeout: 240_000 }, async () => {
    const data = randomBytes(100 * MiB);
    // Blocks are stored with trailing zero bytes stripped (Pithos hashing): a random block ends
    // in a zero byte 1 time in 256, which made the stored total a byte short in ~1 run of 3
    // (100 blocks of 1 MiB). End every MiB (so any block size up to 1 MiB) with a non-zero byte.
    for (let end = MiB - 1; end < data.length; end += MiB) data[end]! |= 1;
    const p = await file('big.bin', data);
    const blocksDir = join(dir, 'data', 'blocks');
    const s0 = await storedBytes(blocksDir);
    const a = await curl(['-T', p, ...auth, `${base}/test/dedup/one`]);
    expect(a.status).toBe(201);
    const s1 = await storedBytes(blocksDir);
    const b = await curl(['-T', p, ...auth, `${base}/test/dedup/two`]);
    expect(b.status).toBe(201);
    const s2 = await storedBytes(blocksDir);
    expect(s1 - s0).toBe(100 * MiB);
    expect(s2).toBe(s1);
    expect(a.headers['x-object-hash']).toBe(b.headers['x-object-hash']);
    const got = await curl([...auth, `${base}/test/dedup/two`]);
    expect(sha256(got.body)).toBe(sha256(data));
  });
});

describe('gateway: the swift client', () => {
  const S = (...args: string[]) =>
    run('swift', ['-A', `${base}/auth/v1.0`, '-U', 'test:tester', '-K', 'testing', ...args], SWIFT_ENV);

  it('uploads, lists, stats, downloads and deletes', async () => {
    const data = Buffer.concat([randomBytes(3 * BS + 123), Buffer.alloc(BS)]);
    const src = await file('swift-up.bin', data);
    const up = await S('upload', '--object-name', 'nested/file.bin', 'swift-c', src);
    expect(up.code, up.stderr).toBe(0);
    const list = await S('list', 'swift-c');
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout.toString()).toBe('nested/file.bin\n');
    const containers = await S('list');
    expect(containers.stdout.toString().split('\n')).toContain('swift-c');
    const st = await S('stat', 'swift-c', 'nested/file.bin');
    expect(st.code, st.stderr).toBe(0);
    expect(st.stdout.toString()).toMatch(new RegExp(`Content Length: ${data.length}`));
    expect(st.stdout.toString()).toMatch(new RegExp(`ETag: ${md5(data)}`));
    const out = join(dir, 'swift-down.bin');
    const down = await S('download', 'swift-c', 'nested/file.bin', '-o', out);
    expect(down.code, down.stderr).toBe(0);
    expect((await readFile(out)).equals(data)).toBe(true);
    const del = await S('delete', 'swift-c', 'nested/file.bin');
    expect(del.code, del.stderr).toBe(0);
    expect((await S('list', 'swift-c')).stdout.toString()).toBe('');
    const delc = await S('delete', 'swift-c');
    expect(delc.code, delc.stderr).toBe(0);
    expect((await S('list')).stdout.toString().split('\n')).not.toContain('swift-c');
  });
});

/**
 * A volume `name` of `blocks4m` 4 MiB blocks holding `payload` from its start, snapshotted as
 * `<name>-snap`; resolves the snapshot's whole contents.
 */
async function snapshotOf(name: string, blocks4m: number, payload: Buffer): Promise<Buffer> {
  const size = blocks4m * 4 * MiB;
  await mapper.create(name, { size });
  let at = 0;
  for (const s of await mapper.mapWrite(name, 0, payload.length)) {
    await blocks.write(s.target, s.offset, payload.subarray(at, at + s.size));
    at += s.size;
  }
  await mapper.snapshot(name, `${name}-snap`);
  return Buffer.concat([payload, Buffer.alloc(size - payload.length)]);
}

/** Publishes map `source` as the file at `path` through the bridge (X-Archipelago-Source-Map). */
const publish = (source: string, path: string, token = TOKEN) =>
  curl([
    '-X',
    'PUT',
    '-H',
    `X-Archipelago-Source-Map: ${source}`,
    '-H',
    'Content-Length: 0',
    '-H',
    `X-Auth-Token: ${token}`,
    `${base}${path}`,
  ]);

describe("gateway: every file passes swift download's MD5 check", () => {
  const S = (...args: string[]) =>
    run('swift', ['-A', `${base}/auth/v1.0`, '-U', 'test:tester', '-K', 'testing', ...args], SWIFT_ENV);

  it('uploaded, hashmap PUT, bridged from a snapshot, and a record from before MD5 ETags', async () => {
    expect((await curl(['-X', 'PUT', ...auth, `${base}/test/etags`])).status).toBe(201);
    const want = new Map<string, Buffer>();
    // Uploaded by swift itself.
    const up = Buffer.concat([randomBytes(BS + 77), Buffer.alloc(BS), randomBytes(10)]);
    const upRun = await S('upload', '--object-name', 'uploaded.bin', 'etags', await file('etag-up.bin', up));
    expect(upRun.code, upRun.stderr).toBe(0);
    want.set('uploaded.bin', up);
    // The same blocks by hashmap PUT (no data sent, so no MD5 seen on the wire).
    const hm = await curl([...auth, `${base}/test/etags/uploaded.bin?hashmap&format=json`]);
    const put = await curl([
      '-X',
      'PUT',
      '--data-binary',
      hm.body.toString(),
      ...auth,
      `${base}/test/etags/by-hashmap.bin?hashmap`,
    ]);
    expect(put.status, put.body.toString()).toBe(201);
    expect(put.headers.etag).toBe(md5(up));
    want.set('by-hashmap.bin', up);
    // A snapshot published through the bridge (its blocks named by SHA-256, not by MD5).
    const whole = await snapshotOf('etagvol', 2, randomBytes(4 * MiB + 4321));
    const reg = await publish('etagvol-snap', '/test/etags/snapshot.raw');
    expect(reg.status, reg.body.toString()).toBe(201);
    expect(reg.headers.etag).toBe(md5(whole));
    want.set('snapshot.raw', whole);
    // A record written before every file had an MD5: its ETag was the Merkle root.
    const oldData = randomBytes(BS + 5);
    expect(
      (await curl(['-T', await file('etag-old.bin', oldData), ...auth, `${base}/test/etags/old.bin`])).status,
    ).toBe(201);
    const key = objectKey('test', 'etags', 'old.bin');
    const rec = JSON.parse((await maps.read(key, 0, (await maps.info(key))!.size)).toString());
    await maps.writeFull(key, Buffer.from(JSON.stringify({ ...rec, etag: rec.hash })));
    want.set('old.bin', oldData);

    const out = join(dir, 'etag-down');
    const down = await S('download', 'etags', '-D', out);
    expect(down.code, down.stderr).toBe(0);
    expect(down.stderr).not.toMatch(/md5sum != etag/);
    for (const [name, data] of want) {
      expect((await readFile(join(out, name))).equals(data), name).toBe(true);
      expect((await curl(['-I', ...auth, `${base}/test/etags/${name}`])).headers.etag, name).toBe(md5(data));
    }
  });
});

describe('gateway: bridges to volumes', () => {
  it('registers a snapshot as a file and clones a file into a volume, copying no data', async () => {
    const bs = 4 * MiB;
    const whole = await snapshotOf('gwvol', 3, randomBytes(bs + 5000));
    const reg = await publish('gwvol-snap', '/test/bridge/image.raw');
    expect(reg.status, reg.body.toString()).toBe(201);
    const root = merkleRoot(hashesOf(whole, bs));
    expect(reg.headers['x-object-hash']).toBe(root);
    expect(reg.headers['x-archipelago-map']).toBe(root);
    const get = await curl([...auth, `${base}/test/bridge/image.raw`]);
    expect(get.body.equals(whole)).toBe(true);
    const hm = JSON.parse(
      (await curl([...auth, `${base}/test/bridge/image.raw?hashmap&format=json`])).body.toString(),
    );
    expect(hm.block_size).toBe(bs);

    const beforeClone = await storedBytes(join(dir, 'data', 'blocks'));
    const clone = await curl([
      '-X',
      'POST',
      '-H',
      'X-Archipelago-Clone-To: fromfile',
      ...auth,
      `${base}/test/bridge/image.raw`,
    ]);
    expect(clone.status, clone.body.toString()).toBe(201);
    expect(JSON.parse(clone.body.toString())).toMatchObject({
      volume: 'fromfile',
      size: 3 * bs,
      source: root,
    });
    expect(await storedBytes(join(dir, 'data', 'blocks'))).toBe(beforeClone);
    const parts: Buffer[] = [];
    for (const s of await mapper.mapRead('fromfile', 0, 3 * bs)) {
      parts.push(
        s.zero ? Buffer.alloc(s.size) : await blocks.read(s.target, s.offset, s.size, { missingOk: true }),
      );
    }
    expect(Buffer.concat(parts).equals(whole)).toBe(true);
    // Only bridge accounts may reach maps by name.
    expect((await curl(['-X', 'PUT', `${base}/other/oc`, '-H', `X-Auth-Token: ${OTHER}`])).status).toBe(201);
    const denied = await publish('gwvol-snap', '/other/oc/stolen', OTHER);
    expect(denied.status).toBe(403);
    // A writable volume cannot be registered.
    const bad = await publish('gwvol', '/test/bridge/x');
    expect(bad.status).toBe(409);
  });
});

describe('gateway: files and vlmc share maps', () => {
  it('vlmc clones a volume from an uploaded file and hashes a snapshot the gateway then serves', async () => {
    const VLMC = join(ROOT, 'packages', 'cli', 'bin', 'vlmc.js');
    if (!existsSync(join(ROOT, 'packages', 'cli', 'dist', 'commands', 'hash.js'))) {
      throw new Error('the CLI is not built: run "npx tsc --build packages/cli" first');
    }
    const conf = join(dir, 'vlmc.conf');
    await writeFile(
      conf,
      `[ARCHIPELAGO]\nUSER = archipelago\nGROUP = archipelago\nBLKTAP_ENABLED = False\nUMASK = 0o007\n\n` +
        `[blockerb]\ntype = file_blocker\narchip_dir = ${join(dir, 'data', 'blocks')}\nunique_str = cli\n\n` +
        `[blockerm]\ntype = file_blocker\narchip_dir = ${join(dir, 'data', 'maps')}\nunique_str = cli\n`,
    );
    const env = { ...process.env, ARCHIPELAGO_CONF: conf, XDG_DATA_HOME: join(dir, 'xdg') };
    const vlmc = (...args: string[]) => run(process.execPath, [VLMC, ...args], env);
    const data = Buffer.concat([randomBytes(2 * BS + 99)]);
    const put = await curl([
      '-T',
      await file('forvlmc.bin', data),
      ...auth,
      `${base}/test/bridge/forvlmc.bin`,
    ]);
    expect(put.status).toBe(201);
    const mapName = put.headers['x-archipelago-map']!;
    const created = await vlmc('create', 'vlmc-from-file', '--snap', mapName);
    expect(created.code, created.stderr).toBe(0);
    const out = join(dir, 'vlmc-out.raw');
    const exp = await vlmc('export', 'vlmc-from-file', out);
    expect(exp.code, exp.stderr).toBe(0);
    expect((await readFile(out)).subarray(0, data.length).equals(data)).toBe(true);
    // And back: snapshot the volume, hash it with vlmc, publish the hashed map as a file.
    expect((await vlmc('snapshot', 'vlmc-from-file', 'vlmc-snap')).code).toBe(0);
    const hashed = await vlmc('hash', 'vlmc-snap');
    expect(hashed.code, hashed.stderr).toBe(0);
    const name = hashed.stdout.toString().trim();
    expect(name).toMatch(/^[0-9a-f]{64}/);
    const reg = await publish(name, '/test/bridge/from-vlmc.raw');
    expect(reg.status, reg.body.toString()).toBe(201);
    expect(reg.headers['x-archipelago-map']).toBe(name);
    const got = await curl([...auth, `${base}/test/bridge/from-vlmc.raw`]);
    expect(got.body.subarray(0, data.length).equals(data)).toBe(true);
  });
});

describe('gateway: deleted files are reclaimed by vlmc gc', () => {
  it('swift upload twice, delete: vlmc gc frees only what no file names, vlmc du shows 0 unreferenced', async () => {
    // A store of its own (the other tests leave abandoned uploads' blocks, kept for the grace).
    const gdir = join(dir, 'gc');
    // (as the runtime opens blockerm: other processes, vlmc gc here, rewrite its objects)
    const gmaps = new FileBlocker({ dir: join(gdir, 'maps'), identity: 'gw_e2e_gc', revalidateWrites: true });
    const gblocks = new FileBlocker({ dir: join(gdir, 'blocks'), identity: 'gw_e2e_gc' });
    const gmapper = new Mapper({ blockerm: gmaps, blockerb: gblocks });
    const g = await startGateway({
      blockerm: gmaps,
      blockerb: gblocks,
      mapper: gmapper,
      blocksize: BS,
      auth: { users: [{ user: 'test:tester', key: 'testing', account: 'test' }] },
    });
    try {
      const conf = join(gdir, 'vlmc.conf');
      await mkdir(gdir, { recursive: true });
      await writeFile(
        conf,
        `[ARCHIPELAGO]\nUSER = archipelago\nGROUP = archipelago\nBLKTAP_ENABLED = False\nUMASK = 0o007\n\n` +
          `[blockerb]\ntype = file_blocker\narchip_dir = ${join(gdir, 'blocks')}\nunique_str = cli\n\n` +
          `[blockerm]\ntype = file_blocker\narchip_dir = ${join(gdir, 'maps')}\nunique_str = cli\n`,
      );
      const env = { ...process.env, ARCHIPELAGO_CONF: conf, XDG_DATA_HOME: join(gdir, 'xdg') };
      const VLMC = join(ROOT, 'packages', 'cli', 'bin', 'vlmc.js');
      const vlmcJson = async (...args: string[]) => {
        const r = await run(process.execPath, [VLMC, ...args, '--json'], env);
        expect(r.code, `vlmc ${args.join(' ')}: ${r.stderr}`).toBe(0);
        return JSON.parse(r.stdout.toString()) as Record<string, number>;
      };
      const S = (...args: string[]) =>
        run('swift', ['-A', `${g.url}/auth/v1.0`, '-U', 'test:tester', '-K', 'testing', ...args], SWIFT_ENV);
      const x = Buffer.concat([randomBytes(2 * BS), Buffer.alloc(BS), randomBytes(Math.floor(BS / 3))]);
      const y = randomBytes(2 * BS + 5);
      const src = join(gdir, 'src');
      await mkdir(src);
      await writeFile(join(src, 'first.bin'), x);
      await writeFile(join(src, 'second.bin'), x);
      await writeFile(join(src, 'other.bin'), y);
      const up = await S('upload', '--object-name', 'up', 'gc', src); // up/first.bin, ...
      expect(up.code, up.stderr).toBe(0);
      const xBlocks = 3; // the zero block is stored nowhere
      const yBlocks = 3;
      const usage = () => storeUsage({ mapper: gmapper, blockerb: gblocks });
      expect(await usage()).toMatchObject({ blockerObjects: xBlocks + yBlocks, unreferencedBytes: 0 });

      // One of the two files of x, and the only file of y, go.
      const del = await S('delete', 'gc', 'up/first.bin', 'up/other.bin');
      expect(del.code, del.stderr).toBe(0);
      expect(await collectGarbage({ blockerm: gmaps, blockerb: gblocks, dryRun: true })).toMatchObject({
        reclaimableObjects: yBlocks,
        reclaimableBytes: y.length,
      });
      // Before gc, vlmc du already counts y's blocks unreferenced (no file names its map).
      expect(await vlmcJson('du')).toMatchObject({
        maps: 1,
        unreferencedObjects: yBlocks,
        unreferencedBytes: y.length,
        reclaimableBytes: y.length,
      });
      const dry = await run(process.execPath, [VLMC, 'gc', '--dry-run'], env);
      expect(dry.stdout.toString()).toMatch(/^gateway maps: +1 would be removed \(no file names them\)$/m);
      const r = await vlmcJson('gc');
      expect(r).toMatchObject({ gatewayMaps: 1, freedObjects: yBlocks, freedBytes: y.length });
      expect(await vlmcJson('du')).toMatchObject({
        blockerObjects: xBlocks,
        unreferencedBytes: 0,
        reclaimableObjects: 0,
        reclaimableBytes: 0,
      });
      // The second file of x survives: swift checks the download against its ETag (MD5).
      const out = join(gdir, 'second.out');
      const down = await S('download', 'gc', 'up/second.bin', '-o', out);
      expect(down.code, down.stderr).toBe(0);
      expect(md5(await readFile(out))).toBe(md5(x));

      // The last file of x goes: nothing is left in blockerb.
      expect((await S('delete', 'gc', 'up/second.bin')).code).toBe(0);
      expect(await collectGarbage({ blockerm: gmaps, blockerb: gblocks })).toMatchObject({
        gatewayMaps: 1,
        freedObjects: xBlocks,
      });
      expect(await usage()).toMatchObject({ maps: 0, blockerObjects: 0, unreferencedBytes: 0 });
      expect(await storedBytes(join(gdir, 'blocks'))).toBe(0);
    } finally {
      await g.close();
      await gmapper.close();
      await gmaps.close();
      await gblocks.close();
    }
  });
});

describe('gateway: hostile input', () => {
  const h = (p: string) => `${base}${p}`;

  it('refuses path traversal and bad names', async () => {
    for (const p of [
      '/test/../../etc/passwd',
      '/../test/c1',
      '/test/%2e%2e/x',
      '/test/hostile/a/../../b',
      '/test/hostile/%2e%2e/%2e%2e/etc/passwd',
      '/test/hostile/x%00y',
      '/test/hostile/%ff%fe',
      '/test/c%2fd/x',
    ]) {
      const r = await curl(['--path-as-is', ...auth, h(p)]);
      expect([400, 403], p).toContain(r.status);
      const w = await curl(['--path-as-is', '-X', 'PUT', '--data-binary', 'evil', ...auth, h(p)]);
      expect([400, 403], p).toContain(w.status);
    }
    expect(existsSync(join(dir, 'data', 'etc'))).toBe(false);
    expect((await curl([...auth, h('/test/hostile')])).status).toBe(204);
  });

  it('bounds header and URL sizes', async () => {
    const big = await curl(['-H', `X-Object-Meta-Big: ${'a'.repeat(20_000)}`, ...auth, h('/test/hostile')]);
    expect(big.status).toBe(431);
    const long = await curl([...auth, h(`/test/hostile/${'x'.repeat(9000)}`)]);
    expect(long.status).toBe(414);
    const meta = ['-X', 'PUT', '--data-binary', 'x', ...auth];
    for (let i = 0; i < 100; i++) meta.push('-H', `X-Object-Meta-K${i}: v`);
    expect((await curl([...meta, h('/test/hostile/meta')])).status).toBe(400);
    expect((await curl(['-I', ...auth, h('/test/hostile/meta')])).status).toBe(404);
  });

  it('refuses oversize bodies and hashmaps with 413 before reading them, storing nothing', async () => {
    const before = await storedBytes(join(dir, 'data', 'blocks'));
    const r = await rawRequest(
      `PUT /test/hostile/huge HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${TOKEN}\r\nContent-Length: ${300 * MiB}\r\n\r\n`,
      Buffer.alloc(64 * 1024, 1),
    );
    expect(r).toMatch(/^HTTP\/1\.1 413 /);
    const hm = await rawRequest(
      `PUT /test/hostile/hm?hashmap HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${TOKEN}\r\nContent-Length: ${100 * MiB}\r\n\r\n`,
      Buffer.from('{'),
    );
    expect(hm).toMatch(/^HTTP\/1\.1 413 /);
    const noLen = await rawRequest(
      `PUT /test/hostile/nolen HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${TOKEN}\r\nConnection: close\r\n\r\n`,
      Buffer.alloc(0),
    );
    expect(noLen).toMatch(/^HTTP\/1\.1 411 /);
    expect(await storedBytes(join(dir, 'data', 'blocks'))).toBe(before);
  });

  it('rejects wrong hashes, sizes and ETags with 4xx and leaves no file', async () => {
    const put = (body: string, name: string) =>
      curl([
        '-X',
        'PUT',
        '-H',
        'Content-Type: application/json',
        '--data-binary',
        body,
        ...auth,
        h(`/test/hostile/${name}?hashmap`),
      ]);
    const good = pithosBlockHash(Buffer.from('x'));
    expect((await put('not json', 'a')).status).toBe(400);
    expect((await put(JSON.stringify({ bytes: 10, hashes: ['zz'] }), 'b')).status).toBe(400);
    expect((await put(JSON.stringify({ bytes: 2 * BS, hashes: [good] }), 'c')).status).toBe(400);
    expect((await put(JSON.stringify({ bytes: -1, hashes: [] }), 'd')).status).toBe(400);
    expect((await put(JSON.stringify({ bytes: 1e18, hashes: [] }), 'e')).status).toBe(400);
    expect(
      (await put(JSON.stringify({ bytes: 10, hashes: ['../../../../etc/passwd'.padEnd(64, 'x')] }), 'f'))
        .status,
    ).toBe(400);
    const p = await file('etag.bin', randomBytes(BS + 7));
    const bad = await curl(['-T', p, '-H', `ETag: ${'0'.repeat(32)}`, ...auth, h('/test/hostile/etag')]);
    expect(bad.status).toBe(422);
    for (const n of ['a', 'b', 'c', 'd', 'e', 'f', 'etag']) {
      expect((await curl(['-I', ...auth, h(`/test/hostile/${n}`)])).status, n).toBe(404);
    }
    expect((await curl([...auth, h('/test/hostile')])).status).toBe(204);
  });

  it('a gc run during an upload keeps the old stored block the upload reuses (a gc hold)', async () => {
    // An old orphan: a stored block no file names (as after a file was deleted).
    const old = randomBytes(BS);
    const tail = randomBytes(BS);
    const oldName = pithosBlockHash(old);
    await blocks.writeFull(oldName, old);
    const where = sha256(Buffer.from(oldName));
    const path = join(
      dir,
      'data',
      'blocks',
      where.slice(0, 2),
      where.slice(2, 4),
      where.slice(4, 6),
      oldName,
    );
    await utimes(path, Date.now() / 1000 - 3600, Date.now() / 1000 - 3600); // an hour old
    const done = new Promise<number>((resolve, reject) => {
      const u = new URL(base);
      const s = connect(Number(u.port), u.hostname, () => {
        s.write(
          `PUT /test/hostile/reuse HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${TOKEN}\r\nContent-Length: ${2 * BS}\r\nConnection: close\r\n\r\n`,
        );
        // The first block (the orphan's bytes: found stored, not written again), then a pause
        // while gc runs, then the rest.
        s.write(old, async () => {
          await new Promise((r) => setTimeout(r, 400));
          try {
            const r = await collectGarbage({ blockerm: maps, blockerb: blocks, graceMs: 0 });
            expect(r.freedObjects).toBe(0);
          } catch (e) {
            reject(e);
          }
          s.write(tail);
        });
      });
      let reply = '';
      s.on('data', (d) => {
        reply += d.toString();
      });
      s.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d+)/.exec(reply)?.[1])));
      s.on('error', reject);
    });
    expect(await done).toBe(201);
    expect(await blocks.exists(pithosBlockHash(old))).toBe(true);
    const got = await curl([...auth, h('/test/hostile/reuse')]);
    expect(got.status).toBe(200);
    expect(md5(got.body)).toBe(md5(Buffer.concat([old, tail])));
    expect((await curl(['-X', 'DELETE', ...auth, h('/test/hostile/reuse')])).status).toBe(204);
  });

  it('leaves no visible file when the client disconnects mid-upload', async () => {
    await new Promise<void>((resolve, reject) => {
      const u = new URL(base);
      const s = connect(Number(u.port), u.hostname, () => {
        s.write(
          `PUT /test/hostile/cut HTTP/1.1\r\nHost: x\r\nX-Auth-Token: ${TOKEN}\r\nContent-Length: ${10 * MiB}\r\n\r\n`,
        );
        s.write(randomBytes(3 * MiB + 17), () => setTimeout(() => s.destroy(), 100));
      });
      s.on('close', () => resolve());
      s.on('error', reject);
    });
    await new Promise((r) => setTimeout(r, 300));
    expect((await curl(['-I', ...auth, h('/test/hostile/cut')])).status).toBe(404);
    expect((await curl([...auth, h('/test/hostile')])).status).toBe(204);
    // The gateway still serves.
    expect((await curl(['-I', ...auth, h('/test/hostile')])).status).toBe(204);
  });

  it('rejects unknown methods and missing containers', async () => {
    expect((await curl(['-X', 'PATCH', ...auth, h('/test/hostile/x')])).status).toBe(405);
    expect((await curl(['-X', 'PUT', '--data-binary', 'x', ...auth, h('/test/nocontainer/x')])).status).toBe(
      404,
    );
  });
});

/** Sends raw bytes, returns what the server answered until it closes (or 5 s). */
async function rawRequest(head: string, body: Buffer): Promise<string> {
  const r = await rawExchange(base, (s) => {
    s.write(head);
    if (body.length) s.write(body);
  });
  return r.answer;
}
