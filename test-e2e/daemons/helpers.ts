/**
 * Helpers for the daemon tests: a temporary configuration (its own archip_dir, run dir and a
 * segment name unique per test run) and the built `archipelago` tool run as a child process.
 * The tool and the peers run from dist/: `pnpm run build` first.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Segment } from '../../packages/libxseg/src/segment/index.js';

export const ROOT = resolve(import.meta.dirname, '../..');
export const TOOL = join(ROOT, 'packages/archipelago/bin/archipelago.js');
export const VLMC = join(ROOT, 'packages/cli/bin/vlmc.js');
export const XSEG = join(ROOT, 'packages/tools-xseg/bin/xseg.js');
/** The system python first: nbdsh and the nbd module are Debian's. */
export const ENV = { ...process.env, PATH: `/usr/bin:/usr/sbin:${process.env.PATH ?? ''}` };
export const BLOCKERB_PORT = 10;
export const BLOCKERM_PORT = 12;

export interface TestConfig {
  dir: string;
  conf: string;
  runDir: string;
  segment: string;
  spec: string;
  /** Runs `archipelago -c conf <args>`. */
  tool(...args: string[]): { status: number | null; stdout: string; stderr: string; json: unknown };
  /** Runs `vlmc -c conf <args>`. */
  vlmc(...args: string[]): { status: number | null; stdout: string; stderr: string; json: unknown };
  pidOf(role: string): number | null;
  log(role: string): string;
  cleanup(): void;
}

let seq = 0;

export function makeConfig(opts: { logLevel?: number; env?: NodeJS.ProcessEnv } = {}): TestConfig {
  const dir = mkdtempSync(join(tmpdir(), 'archip-daemons-'));
  const segment = `archtest${process.pid}x${++seq}x${Date.now() % 100000}`;
  const conf = join(dir, 'archipelago.conf');
  const logLevel = opts.logLevel ?? 2;
  writeFileSync(
    conf,
    // The daemons stay root: the test's directories are not reachable by another account
    // (test-e2e/privileges runs them as another user).
    `[ARCHIPELAGO]
USER = root
GROUP = root

[XSEG]
SEGMENT_PORTS = 128
SEGMENT_DYNPORTS = 64
SEGMENT_SIZE = 400
VTOOL_START = 100
VTOOL_END = 110
segment_name = ${segment}

[PEERS]
ROLES = blockerb blockerm mapperd vlmcd

[blockerb]
type = file_blocker
portno_start = ${BLOCKERB_PORT}
portno_end = ${BLOCKERB_PORT}
nr_ops = 16
archip_dir = blocks
log_level = ${logLevel}

[blockerm]
type = file_blocker
portno_start = ${BLOCKERM_PORT}
portno_end = ${BLOCKERM_PORT}
nr_ops = 16
archip_dir = maps
log_level = ${logLevel}

[mapperd]
type = mapperd
portno_start = 11
portno_end = 11
nr_ops = 16
blockerb_port = ${BLOCKERB_PORT}
blockerm_port = ${BLOCKERM_PORT}

[vlmcd]
type = vlmcd
portno_start = 20
portno_end = 30
nr_ops = 16
blocker_port = ${BLOCKERB_PORT}
mapper_port = 11
`,
  );
  const runDir = join(dir, 'run');
  mkdirSync(runDir, { recursive: true });
  const run = (bin: string, ...args: string[]) => {
    const r = spawnSync(process.execPath, [bin, '-c', conf, ...args], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...ENV, ...opts.env },
    });
    let json: unknown;
    if (args.includes('--json')) {
      try {
        json = JSON.parse(r.stdout);
      } catch {
        json = undefined;
      }
    }
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, json };
  };
  const tool = (...args: string[]) => run(TOOL, ...args);
  const vlmc = (...args: string[]) => run(VLMC, ...args);
  return {
    dir,
    conf,
    runDir,
    segment,
    spec: `posix:${segment}:64:128:96:12`,
    tool,
    vlmc,
    pidOf(role) {
      try {
        return Number(readFileSync(join(runDir, `${role}.pid`), 'utf8').trim()) || null;
      } catch {
        return null;
      }
    },
    log(role) {
      try {
        return readFileSync(join(runDir, `${role}.log`), 'utf8');
      } catch {
        return '';
      }
    },
    cleanup() {
      for (const f of readdirSync(runDir).filter((n) => n.endsWith('.json'))) {
        try {
          const pid = (JSON.parse(readFileSync(join(runDir, f), 'utf8')) as { pid?: number }).pid;
          if (pid && pid !== process.pid) process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      for (const role of ['blockerb', 'blockerm', 'mapperd', 'vlmcd']) {
        const pid = this.pidOf(role);
        if (pid)
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
      }
      try {
        Segment.destroy(segment);
      } catch {
        // not there
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function until(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * The daemons' test configuration `c` with both blockers on RADOS (pools blocks and maps,
 * namespace `ns` of the cluster of `cephConf`); `extra` is added to both sections, `mapperd` to
 * `[mapperd]`.
 */
export function useRados(
  c: TestConfig,
  cephConf: string,
  ns: string,
  o: { extra?: string; mapperd?: string } = {},
): TestConfig {
  const text = readFileSync(c.conf, 'utf8');
  const section = (role: string, pool: string, port: number) => `[${role}]
type = rados_blocker
portno_start = ${port}
portno_end = ${port}
nr_ops = 16
pool = ${pool}
namespace = ${ns}
ceph_conf = ${cephConf}
connect_timeout = 10
${o.extra ?? 'op_timeout = 0\n'}`;
  const rest = text.slice(text.indexOf('[mapperd]')).replace('[mapperd]\n', `[mapperd]\n${o.mapperd ?? ''}`);
  writeFileSync(
    c.conf,
    `${text.slice(0, text.indexOf('[blockerb]'))}${section('blockerb', 'blocks', BLOCKERB_PORT)}\n${section('blockerm', 'maps', BLOCKERM_PORT)}\n${rest}`,
  );
  return c;
}

/** READ (1) and WRITE (2) requests blockerb logged as served so far (log level 3). */
export function dataRequests(c: TestConfig): number {
  let n = 0;
  for (const line of c.log('blockerb').split('\n')) {
    if (!line.includes('"msg":"served"')) continue;
    const op = (JSON.parse(line) as { op?: number }).op;
    if (op === 1 || op === 2) n++;
  }
  return n;
}

/** Runs qemu-io commands against a mapped volume's NBD URI (its output); `ok`: none may fail. */
export function qemuIo(uri: string, ...cmds: string[]): { ok: boolean; out: string } {
  const r = spawnSync('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri], {
    encoding: 'utf8',
    env: ENV,
    timeout: 30_000,
  });
  const out = r.stdout + r.stderr;
  return { ok: r.status === 0 && !/failed|error|Pattern verification/i.test(out), out };
}

/** sha256 of every object named `<vol>_...` that blocker `b` lists (a volume's data objects), by name. */
export async function objectHashes(
  b: {
    list(prefix: string): AsyncIterable<string>;
    info(name: string): Promise<{ size: number } | null>;
    read(name: string, offset: number, length: number): Promise<Buffer>;
  },
  vol: string,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const name of b.list(`${vol}_`)) {
    const info = await b.info(name);
    const data = await b.read(name, 0, info?.size ?? 0);
    out[name] = createHash('sha256').update(data).digest('hex');
  }
  return out;
}
