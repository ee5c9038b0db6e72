/**
 * What every `xseg` command shares: `<spec>` as the first argument, and the report rendering.
 * `--json` and errors (`xseg: <CODE>: <message>`, exit status 1) come from @archipelago/cli-kit.
 */
import { ToolCommand } from '@archipelago/cli-kit';
import type { PortReport, SegmentReport } from '@archipelago/libxseg/segment';
import { Args } from '@oclif/core';

export const specArg = Args.string({
  required: true,
  description:
    'Segment spec posix:<name>:<dynports>:<nr_ports>:<size_MiB>:<page_shift> (dynports first, as the ' +
    "original's parser reads it; its help text had nr_ports first). Missing fields take defaults.",
});

/** The base of every `xseg` command (the tools' common base: `--json`, one error format). */
export abstract class XsegCommand extends ToolCommand {}

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
