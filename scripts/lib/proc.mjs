// Child processes for the scripts and benchmarks (not a package: plain ESM, no build).
import { spawn } from 'node:child_process';

/**
 * Runs a command to completion; resolves with { code, stdout, stderr } whatever the exit status
 * (rejects only when it cannot be started).
 */
export function exec(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** Runs a command; resolves with stdout, rejects with its stderr on a non-zero exit. */
export async function run(cmd, args, env = process.env) {
  const r = await exec(cmd, args, { env });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code}\n${r.stderr || r.stdout}`);
  return r.stdout;
}
