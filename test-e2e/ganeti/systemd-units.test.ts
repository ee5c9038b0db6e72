/**
 * The systemd units of packages/archipelago/systemd/ pass `systemd-analyze verify` (unit syntax,
 * every directive known, every Exec command executable) with no warning, once their paths point
 * at this checkout (the units name /opt/archipelago, where docs/INTEGRATION.md installs it, and
 * /usr/bin/node), and every script their Exec lines run exists.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../lib/vlmc.js';

const UNITS = join(ROOT, 'packages/archipelago/systemd');
const analyze = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p));
const dirs: string[] = [];

afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('systemd units', () => {
  it('are archipelago.service (peers) and archipelago-gateway.service', async () => {
    expect((await readdir(UNITS)).filter((f) => f.endsWith('.service')).sort()).toEqual([
      'archipelago-gateway.service',
      'archipelago.service',
    ]);
  });

  it.skipIf(!analyze)(
    `pass systemd-analyze verify${analyze ? '' : ' (systemd-analyze missing: scripts/test.sh installs systemd)'}`,
    async () => {
      const dir = await mkdtemp(join(tmpdir(), 'archip-units-'));
      dirs.push(dir);
      for (const unit of (await readdir(UNITS)).filter((f) => f.endsWith('.service'))) {
        const text = (await readFile(join(UNITS, unit), 'utf8'))
          .replaceAll('/opt/archipelago', ROOT.replace(/\/$/, ''))
          .replaceAll('/usr/bin/node', process.execPath);
        const execs = [...text.matchAll(/^Exec\w+=(\S+) (\S+)/gm)];
        expect(execs.length).toBeGreaterThan(0);
        for (const [, , script] of execs)
          expect(existsSync(script as string), `${unit}: ${script}`).toBe(true);
        await writeFile(join(dir, unit), text);
        const r = await new Promise<{ code: number; out: string }>((resolve) =>
          execFile(analyze as string, ['verify', '--man=no', join(dir, unit)], (err, stdout, stderr) =>
            resolve({ code: err ? 1 : 0, out: stdout + stderr }),
          ),
        );
        expect(r, unit).toEqual({ code: 0, out: '' });
      }
    },
  );

  it('keep the run directory of mapped volumes across restarts, and never kill peers under VMs', async () => {
    const peers = await readFile(join(UNITS, 'archipelago.service'), 'utf8');
    expect(peers).toMatch(/^RuntimeDirectory=archipelago$/m);
    expect(peers).toMatch(/^RuntimeDirectoryPreserve=yes$/m);
    expect(peers).toMatch(/^KillMode=process$/m);
    expect(peers).toMatch(/^ExecStop=.* stop$/m);
    const gw = await readFile(join(UNITS, 'archipelago-gateway.service'), 'utf8');
    expect(gw).toMatch(/^User=archipelago$/m);
    expect(gw).toMatch(/^Restart=on-failure$/m);
  });
});
