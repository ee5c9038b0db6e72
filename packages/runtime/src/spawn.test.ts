import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pidAlive } from '@archipelago/libxseg';
import { afterAll, describe, expect, it } from 'vitest';
import { spawnDetached } from './spawn.js';

const dir = mkdtempSync(join(tmpdir(), 'archip-spawn-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A script for the child process. */
function script(name: string, body: string): string {
  const p = join(dir, `${name}.cjs`);
  writeFileSync(p, body);
  return p;
}

const log = (name: string) => join(dir, `${name}.log`);

describe('spawnDetached', () => {
  it('resolves the READY line of a process that keeps running, detached', async () => {
    const entry = script(
      'ready',
      'process.stdout.write(`READY ${JSON.stringify({ v: process.env.X, argv: process.execArgv })}\\n`); setInterval(() => {}, 1000);',
    );
    const { pid, ready } = await spawnDetached<{ v: string; argv: string[] }>({
      entry,
      env: { X: 'x1' },
      logFile: log('ready'),
      readiness: { kind: 'line' },
      timeoutMs: 10_000,
      what: 'the test process',
    });
    // The data-moving processes' Node options (IO_NODE_ARGS: the old generation's initial limit).
    expect(ready).toEqual({ v: 'x1', argv: ['--initial-old-space-size=64'] });
    expect(pidAlive(pid)).toBe(true);
    process.kill(pid, 'SIGKILL');
  });

  it('rethrows the ERROR line as the ArchipelagoError it names', async () => {
    const entry = script(
      'error',
      'process.stdout.write(`ERROR ${JSON.stringify({ code: "ELOCKED", message: "held by h_2", details: { owner: "h_2" } })}\\n`); process.exit(1);',
    );
    await expect(
      spawnDetached({
        entry,
        logFile: log('error'),
        readiness: { kind: 'line' },
        timeoutMs: 10_000,
        what: 'x',
      }),
    ).rejects.toMatchObject({ code: 'ELOCKED', message: 'held by h_2', details: { owner: 'h_2' } });
  });

  it('fails with EIO quoting the log when the process exits before it is ready', async () => {
    const entry = script('dies', 'console.error("cannot open the blocker: EACCES"); process.exit(3);');
    await expect(
      spawnDetached({
        entry,
        logFile: log('dies'),
        readiness: { kind: 'poll', check: () => undefined },
        timeoutMs: 10_000,
        what: 'blockerb',
      }),
    ).rejects.toMatchObject({
      code: 'EIO',
      message: `blockerb failed to start (exit 3): cannot open the blocker: EACCES; see ${log('dies')}`,
    });
  });

  it('kills a process that is not ready in time, and fails with ETIMEDOUT', async () => {
    const entry = script('slow', 'setInterval(() => {}, 1000);');
    let pid = 0;
    await expect(
      spawnDetached({
        entry,
        logFile: log('slow'),
        readiness: {
          kind: 'poll',
          check: (p) => {
            pid = p;
            return undefined;
          },
        },
        timeoutMs: 300,
        what: 'mapperd',
      }),
    ).rejects.toMatchObject({ code: 'ETIMEDOUT', message: /mapperd did not become ready within 0.3 s/ });
    const until = Date.now() + 5000;
    while (pidAlive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    expect(pidAlive(pid)).toBe(false);
  });

  it('polls until the check gives a value', async () => {
    const flag = join(dir, 'flag');
    const entry = script(
      'poll',
      `setTimeout(() => require('fs').writeFileSync(${JSON.stringify(flag)}, String(process.pid)), 200); setInterval(() => {}, 1000);`,
    );
    const { pid, ready } = await spawnDetached({
      entry,
      logFile: log('poll'),
      readiness: {
        kind: 'poll',
        check: (p) => {
          try {
            return readFileSync(flag, 'utf8') === String(p) ? 'up' : undefined;
          } catch {
            return undefined;
          }
        },
      },
      timeoutMs: 10_000,
      what: 'x',
    });
    expect(ready).toBe('up');
    process.kill(pid, 'SIGKILL');
  });
});
