import { execFile } from 'node:child_process';
import { readdir, stat } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';

export interface Run {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program; never throws (the exit code is in the result). */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, maxBuffer: 512 * 1024 * 1024, encoding: 'buffer' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr: stderr.toString() });
    });
  });
}

/** curl with -s; returns status, headers (lower-case) and body. */
export async function curl(
  args: string[],
): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
  const r = await run('curl', ['-s', '-S', ...(args.includes('-I') ? [] : ['-D', '-']), ...args]);
  if (r.code !== 0) throw new Error(`curl ${args.join(' ')} failed: ${r.stderr}`);
  // Skip interim 1xx responses (100 Continue).
  let out = r.stdout;
  for (;;) {
    const end = out.indexOf('\r\n\r\n');
    const head = out.subarray(0, end).toString('latin1');
    const status = Number(/^HTTP\/[\d.]+ (\d{3})/.exec(head)?.[1]);
    out = out.subarray(end + 4);
    if (status >= 100 && status < 200) continue;
    const headers: Record<string, string> = {};
    for (const line of head.split('\r\n').slice(1)) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    return { status, headers, body: out };
  }
}

/** Total bytes of the regular files under `dir` (what a file blocker stores). */
export async function storedBytes(dir: string): Promise<number> {
  let total = 0;
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += await storedBytes(p);
    else if (e.isFile()) total += (await stat(p)).size;
  }
  return total;
}

/** A `swift` binary: the Debian python3-swiftclient one (a pyenv python may shadow it on PATH). */
export const SWIFT_ENV: NodeJS.ProcessEnv = { ...process.env, PATH: `/usr/bin:${process.env.PATH ?? ''}` };

/**
 * Connects to the gateway at `url`, lets `send` write raw bytes (and pause as it likes), and
 * resolves what the server answered once it closes the connection (or `guardMs` passed), and
 * after how many ms.
 */
export function rawExchange(
  url: string,
  send: (s: Socket) => void | Promise<void>,
  guardMs = 5000,
): Promise<{ answer: string; ms: number }> {
  const u = new URL(url);
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = connect(Number(u.port), u.hostname, () => void send(s));
    const guard = setTimeout(() => s.destroy(), guardMs);
    s.on('data', (c) => chunks.push(c));
    s.on('close', () => {
      clearTimeout(guard);
      resolve({ answer: Buffer.concat(chunks).toString('latin1'), ms: performance.now() - t0 });
    });
    s.on('error', (e) => {
      if (chunks.length) return;
      reject(e);
    });
  });
}
