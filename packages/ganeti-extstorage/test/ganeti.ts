/**
 * Runs a script of the provider exactly as Ganeti's node daemon does: from the provider's
 * directory, with nothing in its environment but the ExtStorage variables (VOL_NAME, VOL_SIZE,
 * EXTP_*, ...) and PATH, no arguments, stdout and stderr captured, the exit status checked by the
 * caller. The node's configuration is where an installed node has it,
 * /etc/archipelago/archipelago.conf: each run gets a private mount namespace in which /etc is a
 * read-only overlay of `etc` (holding `archipelago/archipelago.conf`) over the real /etc, so the
 * script cannot be told its configuration any other way. Needs root (`unshare -m`, overlayfs).
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The provider directory (what an operator links as /srv/ganeti/extstorage/archipelago). */
export const PROVIDER = join(import.meta.dirname, '..', 'archipelago');
/** Every file the ExtStorage interface names: eight required, three optional. */
export const SCRIPTS = [
  'create',
  'attach',
  'detach',
  'remove',
  'grow',
  'setinfo',
  'verify',
  'snapshot',
  'open',
  'close',
] as const;
export type Action = (typeof SCRIPTS)[number];
/** A node daemon's PATH: the system directories, no vlmc on it (the scripts find this repo's). */
export const NODE_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

export interface ScriptResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunScriptOptions {
  /** A directory with `archipelago/archipelago.conf`, laid over /etc. */
  etc: string;
  /** PATH (default NODE_PATH). */
  path?: string;
  /** A command prefix to run in, e.g. a test host's `nsenter …` (test-e2e/lib/hosts.ts). */
  enter?: readonly string[];
  /** Arguments (Ganeti passes none; verify takes check names). */
  args?: string[];
}

const IN_NAMESPACE = `
set -e
mount -t overlay archip-etc -o "lowerdir=$1:/etc" /etc
cd "$2"; shift 2
exec env -i "$@"
`;

/** Runs `action` with `vars` as its whole environment (plus PATH). */
export function runScript(
  action: Action,
  vars: Record<string, string>,
  opts: RunScriptOptions,
): Promise<ScriptResult> {
  const env = [`PATH=${opts.path ?? NODE_PATH}`, ...Object.entries(vars).map(([k, v]) => `${k}=${v}`)];
  const argv = [
    ...(opts.enter ?? []),
    'unshare',
    '-m',
    'sh',
    '-c',
    IN_NAMESPACE,
    'ganeti',
    opts.etc,
    PROVIDER,
    ...env,
    join(PROVIDER, action),
    ...(opts.args ?? []),
  ];
  return new Promise((resolve) => {
    execFile(
      argv[0] as string,
      argv.slice(1),
      { env: { PATH: NODE_PATH }, timeout: 60_000, cwd: '/' },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

/** Writes `conf` as `<dir>/etc/archipelago/archipelago.conf`; returns `<dir>/etc`. */
export async function nodeEtc(dir: string, conf: string): Promise<string> {
  const etc = join(dir, 'etc');
  await mkdir(join(etc, 'archipelago'), { recursive: true });
  await writeFile(join(etc, 'archipelago', 'archipelago.conf'), conf);
  return etc;
}

/** Why scripts cannot be run as Ganeti runs them here (not root, no overlayfs), or null. */
export async function ganetiUnavailable(): Promise<string | null> {
  if (process.getuid?.() !== 0)
    return 'running the scripts as Ganeti does needs root (mount namespace, overlay on /etc)';
  const dir = await mkdtemp(join(tmpdir(), 'archip-ganeti-probe-'));
  try {
    const etc = await nodeEtc(dir, '');
    const r = await new Promise<ScriptResult>((resolve) =>
      execFile(
        'unshare',
        [
          '-m',
          'sh',
          '-c',
          'mount -t overlay p -o "lowerdir=$0:/etc" /etc && cat /etc/archipelago/archipelago.conf',
          etc,
        ],
        (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }),
      ),
    );
    return r.code === 0 ? null : `an overlay mount on /etc fails here: ${r.stderr.trim()}`;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Ganeti's reading of attach's stdout (lib/storage/extstorage.py): line 1 the device, then URIs. */
export function parseAttach(stdout: string): { device: string | null; uris: string[] } {
  const [first = '', ...rest] = stdout.split('\n');
  return { device: first === '' ? null : first, uris: rest.filter((l) => l !== '') };
}

/** The URI Ganeti's kvm hypervisor picks for the disk (GetUserspaceAccessUri('kvm')). */
export function kvmUri(stdout: string): string | undefined {
  const uri = parseAttach(stdout).uris.find((u) => u.toLowerCase().startsWith('kvm:'));
  return uri?.slice('kvm:'.length);
}
