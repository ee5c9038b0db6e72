/** Runs the built `vlmc` as a user would, against a private configuration in a temp dir. */
import { type ExecFileOptions, execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const VLMC = join(ROOT, 'packages/cli/bin/vlmc.js');

/** PATH with the system python first: nbdsh needs Debian's python3 with the nbd module. */
export const ENV = { ...process.env, PATH: `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}` };

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

export function sh(cmd: string, args: string[], opts: ExecFileOptions = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { env: ENV, maxBuffer: 64 * 1024 * 1024, timeout: 120_000, ...opts },
      (err, stdout, stderr) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === 'number'
            ? (err as { code: number }).code
            : 1
          : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

/** Fails with a clear message when a client this suite needs is missing. */
export function requireTool(bin: string, pkg: string): void {
  const found = ['/usr/bin', '/usr/sbin', '/usr/local/bin'].some((d) => existsSync(join(d, bin)));
  if (!found) throw new Error(`${bin} is missing: install the Debian package ${pkg} (scripts/test.sh does)`);
}

export class Env {
  private constructor(
    readonly dir: string,
    readonly conf: string,
  ) {}

  /** A fresh temp dir and config; `blockers` replaces the file-blocker sections. */
  static async create(name = 'e2e', blockers?: (dir: string) => string): Promise<Env> {
    if (!existsSync(join(ROOT, 'packages/cli/dist/commands'))) {
      throw new Error('packages/cli is not built: run "pnpm build" first');
    }
    const dir = await mkdtemp(join(tmpdir(), `archip-${name}-`));
    const conf = join(dir, 'archipelago.conf');
    if (blockers) {
      await writeFile(
        conf,
        `[ARCHIPELAGO]\nUSER = root\nGROUP = root\n[XSEG]\n[PEERS]\n${blockers(dir)}\n[mapperd]\nlock_timeout = 5\n[vlmcd]\n`,
      );
      return new Env(dir, conf);
    }
    await writeFile(
      conf,
      [
        '[ARCHIPELAGO]',
        // The daemons stay root: the temp directory is not reachable by another account.
        'USER = root',
        'GROUP = root',
        '[XSEG]',
        '[PEERS]',
        '[blockerb]',
        'type = file_blocker',
        `archip_dir = ${dir}/blocks`,
        '[blockerm]',
        'type = file_blocker',
        `archip_dir = ${dir}/maps`,
        '[mapperd]',
        'lock_timeout = 5',
        '[vlmcd]',
        '',
      ].join('\n'),
    );
    return new Env(dir, conf);
  }

  /** Runs vlmc; `--json` output is parsed into `json`. */
  async vlmc(...args: string[]): Promise<Result & { json: unknown }> {
    const r = await sh(process.execPath, [VLMC, ...args], { env: { ...ENV, ARCHIPELAGO_CONF: this.conf } });
    let json: unknown;
    if (args.includes('--json')) {
      try {
        json = JSON.parse(r.stdout);
      } catch {
        json = undefined;
      }
    }
    return { ...r, json };
  }

  /** Runs vlmc and fails the test with its stderr when it fails. */
  async ok(...args: string[]): Promise<string> {
    const r = await this.vlmc(...args);
    if (r.code !== 0) throw new Error(`vlmc ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
    return r.stdout.trim();
  }

  async dispose(): Promise<void> {
    const mapped = await this.vlmc('showmapped', '--json');
    const rows = Array.isArray(mapped.json) ? (mapped.json as Array<{ volume: string }>) : [];
    for (const e of rows) await this.vlmc('unmap', e.volume);
    await rm(this.dir, { recursive: true, force: true });
  }
}
