/** Helpers shared by bench/gc/run.mjs and bench/diff/run.mjs. */
import { execFile, spawn } from 'node:child_process';
import os from 'node:os';
import { promisify } from 'node:util';

export const sh = promisify(execFile);

/** `uptime`'s line: the load next to every number. */
export const uptime = async () => (await sh('uptime')).stdout.trim();

/** A line on stdout, behind the UTC time of day. */
export const log = (...a) => console.log(new Date().toISOString().slice(11, 19), ...a);

/** The median of numbers. */
export function median(xs) {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Runs a command; resolves to its stdout and wall-clock seconds, rejects with its stderr. */
export function run(cmd, args, env = process.env) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      err += d;
    });
    p.on('close', (code) => {
      const seconds = (performance.now() - t0) / 1000;
      if (code === 0) resolve({ out, seconds });
      else reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}\n${err}`));
    });
  });
}

/** The machine, for the results. */
export function hostInfo() {
  const { cpus, loadavg, totalmem } = os;
  return {
    cpus: cpus().length,
    model: cpus()[0]?.model,
    memGiB: Math.round(totalmem() / 2 ** 30),
    load: loadavg(),
  };
}

/** The commit the bench ran at (BENCH_HEAD outside a git checkout). */
export const gitHead = (root) =>
  sh('git', ['-C', root, 'rev-parse', '--short', 'HEAD']).then(
    (r) => r.stdout.trim(),
    () => process.env.BENCH_HEAD ?? 'unknown',
  );
