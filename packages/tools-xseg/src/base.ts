/**
 * The base of every `xseg` command: `<spec>` as the first argument, `--json`, and errors as one
 * line `xseg: <CODE>: <message>` on stderr with exit status 1 (or `{"error":{...}}` with --json).
 */
import { ArchipelagoError } from '@archipelago/libxseg';
import type { PortReport, SegmentReport } from '@archipelago/libxseg/segment';
import { Args, Command, Errors, type Interfaces } from '@oclif/core';

export interface ErrorReport {
  code: string;
  message: string;
  details: Record<string, unknown>;
}

export function describeError(err: unknown): ErrorReport {
  if (ArchipelagoError.isInstance(err))
    return { code: err.code, message: err.message, details: { ...err.details } };
  if (err instanceof Errors.CLIError)
    return { code: 'EINVAL', message: err.message.split('\n')[0] ?? '', details: {} };
  return { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err), details: {} };
}

export const specArg = Args.string({
  required: true,
  description:
    'Segment spec posix:<name>:<dynports>:<nr_ports>:<size_MiB>:<page_shift> (dynports first, as the ' +
    "original's parser reads it; its help text had nr_ports first). Missing fields take defaults.",
});

export abstract class XsegCommand extends Command {
  static override enableJsonFlag = true;
  private failed = false;

  protected override async catch(err: Interfaces.CommandError): Promise<void> {
    if (err instanceof Errors.ExitError) throw err;
    this.parsed = true;
    this.failed = true;
    process.exitCode = 1;
    const r = describeError(err);
    if (this.jsonEnabled()) process.stdout.write(`${JSON.stringify({ error: r }, null, 2)}\n`);
    else process.stderr.write(`xseg: ${r.code}: ${r.message}\n`);
  }

  protected override logJson(json: unknown): void {
    if (this.failed) return;
    process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
  }

  protected say(line: string): void {
    if (!this.jsonEnabled()) process.stdout.write(`${line}\n`);
  }
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
const lockText = (pid: number, alive: boolean) =>
  pid === 0 ? 'Unlocked' : `Locked: Yes (Owner: pid ${pid}${alive ? '' : ', dead: run recoverlocks'})`;

export function formatPort(p: PortReport, r: SegmentReport): string[] {
  return [
    `port ${p.port} (dynamic: ${p.dynamic ? 'True' : 'False'})${p.bound ? '' : ' left'}`,
    `    owner: ${p.ownerPid === 0 ? 'none' : `pid ${p.ownerPid} (${p.ownerAlive ? 'alive' : 'dead'})`}, binds: ${p.binds}`,
    `    requests: ${p.allocReqs}/${r.requests.total}`,
    `    free_queue: ${p.freeQueue}, request_queue: ${p.requestQueue}, reply_queue: ${p.replyQueue}`,
    `    lock: ${lockText(p.lockOwnerPid, p.lockOwnerPid !== 0 && p.ownerAlive && p.lockOwnerPid === p.ownerPid)}`,
  ];
}

export function formatReport(r: SegmentReport, spec: string): string[] {
  const h = r.heap;
  const out = [
    `Segment ${spec} (/dev/shm/${r.name}, ${mib(r.segmentSize)})`,
    h.error
      ? `Heap: ERROR ${h.error}`
      : `Heap usage: ${mib(h.used)} / ${mib(h.size)} (${((100 * h.used) / h.size).toFixed(1)}%), ${h.usedChunks} used chunks, ${h.freeChunks} free chunks, largest free ${mib(h.largestFree)}`,
    `Requests: ${r.requests.total} total, ${r.requests.free} free, ${r.requests.queued} queued, ${r.requests.accepted} accepted, ${r.requests.replies} replies, ${r.requests.held} held${r.requests.corrupt ? `, ${r.requests.corrupt} CORRUPT` : ''}`,
  ];
  for (const l of r.locks) out.push(`Lock ${l.name}: ${lockText(l.ownerPid, l.ownerAlive)}`);
  out.push(`Ports: ${r.nrPorts} (static 0..${r.dynports - 1}, dynamic ${r.dynports}..${r.nrPorts - 1})`);
  for (const p of r.ports) out.push(...formatPort(p, r));
  return out;
}
