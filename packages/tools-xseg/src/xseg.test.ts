import { execFile, fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';

// These tests run the built tool (bin/xseg.js over dist/), as an operator would.
const BIN = fileURLToPath(new URL('../bin/xseg.js', import.meta.url));
const run = promisify(execFile);
const names: string[] = [];

async function xseg(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args]);
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

function spec(): string {
  const name = `xsegtool-${process.pid}-${names.length}`;
  names.push(name);
  return `posix:${name}:4:8:16:12`;
}

afterEach(async () => {
  for (const n of names.splice(0)) await xseg(`posix:${n}:`, 'destroy');
});

/**
 * A peer process on segment `spec` that binds `port`, accepts `requests` requests (sent from its
 * port 0) it never answers, then holds the lock of `lockPort`; resolves once it does.
 */
async function stuckPeer(spec: string, o: { port: number; requests: number; lockPort: number }) {
  const script = `
    import { Segment } from ${JSON.stringify(fileURLToPath(new URL('../../libxseg/dist/segment/index.js', import.meta.url)))};
    const seg = Segment.join(${JSON.stringify(spec)});
    const p = seg.bindPort(${o.port});
    let n = 0;
    p.onRequest(() => { if (++n === ${o.requests}) { seg[Object.getOwnPropertySymbols(seg)[0]].debugHoldLock('port', ${o.lockPort}); process.send('held'); } });
    const c = seg.bindPort(0);
    for (let i = 0; i < ${o.requests}; i++) c.submit({ dst: ${o.port}, op: 1, size: 4096 });
  `;
  const child = fork('-', [], { execArgv: ['--input-type=module', '-e', script] });
  await new Promise((r) => child.once('message', r));
  return child;
}

describe('xseg', () => {
  it('creates, reports and destroys a segment (spec first, as in the original)', async () => {
    const s = spec();
    const name = s.split(':')[1] as string;
    expect((await xseg(s, 'create')).stdout).toMatch(/created posix:.*:4:8:16:12/);
    expect(existsSync(`/dev/shm/${name}`)).toBe(true);
    const all = await xseg(`posix:${name}:`, 'reportall');
    expect(all.code).toBe(0);
    expect(all.stdout).toMatch(/Heap usage: 0\.0 MiB \/ 16\.0 MiB/);
    expect(all.stdout).toMatch(/Lock heap: Unlocked/);
    const json = JSON.parse((await xseg(`posix:${name}:`, 'reportall', '--json')).stdout);
    expect(json).toMatchObject({ name, nrPorts: 8, dynports: 4, heap: { used: 0, freeChunks: 1 } });
    expect(JSON.parse((await xseg(`posix:${name}:`, 'report', '1', '--json')).stdout)).toEqual({
      port: 1,
      assigned: false,
    });
    expect((await xseg(`posix:${name}:`, 'destroy')).code).toBe(0);
    expect(existsSync(`/dev/shm/${name}`)).toBe(false);
  });

  it('reports errors with a stable code and exit status 1', async () => {
    const s = spec();
    await xseg(s, 'create');
    const again = await xseg(s, 'create');
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^xseg: EBUSY: segment .* already exists/);
    const bad = await xseg('posix:x:128:64', 'create', '--json');
    expect(JSON.parse(bad.stdout).error.code).toBe('EINVAL');
    expect((await xseg('posix:nosuchsegment-xyz:', 'reportall')).stderr).toMatch(/EINVAL: no segment/);
  });

  it('recoverport and recoverlocks act on a SIGKILLed peer', async () => {
    const s = spec();
    await xseg(s, 'create');
    // A peer that binds port 1, accepts three requests it will never answer, and holds port 2's lock.
    const child = await stuckPeer(s, { port: 1, requests: 3, lockPort: 2 });
    const pid = child.pid as number;
    const live = await xseg(s, 'recoverlocks', String(pid));
    expect(live.code).toBe(1);
    expect(live.stderr).toMatch(/EBUSY: pid \d+ is alive/);
    expect((await xseg(s, 'recoverport', '1')).stderr).toMatch(/EBUSY/);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const report = JSON.parse((await xseg(s, 'reportall', '--json')).stdout);
    expect(report.locks).toContainEqual({ name: 'port 2', ownerPid: pid, ownerAlive: false });
    expect(report.requests.accepted).toBe(3);
    expect((await xseg(s, 'recoverlocks', String(pid))).stdout).toMatch(/1 locks recovered/);
    const rp = JSON.parse((await xseg(s, 'recoverport', '1', '--json')).stdout);
    expect(rp).toEqual({ port: 1, failed: 3, freed: 0 });
    // the failures went back to port 0 (dead too); recovering it frees them
    expect(JSON.parse((await xseg(s, 'recoverport', '0', '--json')).stdout)).toMatchObject({ freed: 3 });
    const clean = JSON.parse((await xseg(s, 'reportall', '--json')).stdout);
    expect(clean.requests.free).toBe(clean.requests.total);
    expect(clean.heap.used).toBe(0);
    expect(clean.locks.filter((l: { ownerPid: number }) => l.ownerPid !== 0)).toEqual([]);
    const text = await xseg(s, 'report', '1');
    expect(text.stdout).toMatch(/port 1 \(dynamic: False\)/);
    expect(text.stdout).toMatch(/owner: pid \d+ \(dead\)/);
  });

  it('the guide\'s "Peer failure" procedure: kill -9 a peer holding a lock, recoverlocks <port>, recoverport <port>', async () => {
    const s = spec();
    await xseg(s, 'create');
    // A peer bound to port 3 that accepted two requests and holds port 3's own lock.
    const child = await stuckPeer(s, { port: 3, requests: 2, lockPort: 3 });
    const pid = child.pid as number;
    // While the peer lives, the port is refused with the reason (it is not taken as pid 3).
    const alive = await xseg(s, 'recoverlocks', '3');
    expect(alive.code).toBe(1);
    expect(alive.stderr).toMatch(new RegExp(`EBUSY: port 3 is bound by pid ${pid}, which is alive`));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const locks = await xseg(s, 'recoverlocks', '3');
    expect(locks.code).toBe(0);
    expect(locks.stdout).toBe(`port 3: dead owner pid ${pid}: 1 locks recovered\n`);
    expect(JSON.parse((await xseg(s, 'recoverport', '3', '--json')).stdout)).toEqual({
      port: 3,
      failed: 2,
      freed: 0,
    });
    const after = JSON.parse((await xseg(s, 'reportall', '--json')).stdout);
    expect(after.locks.filter((l: { ownerPid: number }) => l.ownerPid === pid)).toEqual([]);
    expect(after.requests.accepted).toBe(0);
  });
});
