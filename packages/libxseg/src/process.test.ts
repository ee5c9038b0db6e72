import { spawn, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { pidAlive } from './process.js';

describe('pidAlive', () => {
  it('is true for this process and false for nonsense pids', () => {
    expect(pidAlive(process.pid)).toBe(true);
    expect(pidAlive(0)).toBe(false);
    expect(pidAlive(-1)).toBe(false);
    expect(pidAlive(1.5)).toBe(false);
  });

  it('is false for a process that exited and was reaped', () => {
    const r = spawnSync(process.execPath, ['-e', '0']);
    expect(pidAlive(r.pid as number)).toBe(false);
  });

  it('counts a zombie (exited, not reaped yet) as gone', async () => {
    // The child exits at once; until this process reaps it (the 'exit' event), it is a zombie.
    const child = spawn('sh', ['-c', 'exit 0'], { stdio: 'ignore' });
    const pid = child.pid as number;
    // Wait until /proc shows it as a zombie, without letting Node reap it: Node reaps on SIGCHLD
    // from its own loop, so poll synchronously.
    const until = Date.now() + 5000;
    let sawZombie = false;
    while (Date.now() < until) {
      const st = spawnSync('sh', ['-c', `cut -d' ' -f3 /proc/${pid}/stat 2>/dev/null`])
        .stdout.toString()
        .trim();
      if (st === 'Z') {
        sawZombie = true;
        break;
      }
      if (st === '') break;
    }
    expect(sawZombie).toBe(true);
    expect(pidAlive(pid)).toBe(false);
    await new Promise((r) => child.on('exit', r));
    expect(pidAlive(pid)).toBe(false);
  });
});
