/**
 * One process of the concurrent model test (concurrent-model.ts): it runs the commands its parent
 * sends over stdin, one JSON object a line, and answers each on stdout, one JSON object a line.
 *
 * A child program is this module bundled with how to open the blockers of a store:
 *
 *     serveModelChild((root, identity) => ({ blockerm: new FileBlocker(...), blockerb: ... }));
 *
 * Each command is run as a `vlmc` command is: with its own blockers, Mapper (the store's identity,
 * the host locks of the run directory) and Composer (unless `perCommand` is false: then the child
 * keeps one of each for its whole life, as a long-lived process would); afterwards the volumes
 * the command opened are closed (`composer.close` of each of `mapper.openVolumes()`), so the
 * child holds no host lock and no volume lock between two commands.
 */
import { createInterface } from 'node:readline';
import type { Blocker } from '@archipelago/blocker';
import { FlockHostLocks, Mapper } from '@archipelago/mapper';
import { Composer } from '../composer.js';
import { type Cmd, failure } from './model-ops.js';

/** The blockers of the store under `root` (what the parent opens for its checks too). */
export type OpenBlockers = (root: string, identity: string) => { blockerm: Blocker; blockerb: Blocker };

/** What a child works on, sent by the parent before the commands of each run. */
export interface ChildConfig {
  /** The store (given to `OpenBlockers`). */
  root: string;
  identity: string;
  /** Directory of the host locks (the run directory's `host-locks`); null: no same-host serialization. */
  hostLockDir: string | null;
  leaseMs: number;
  lockTimeoutMs: number;
  /** Blockers, Mapper and Composer anew for every command (as vlmc), else one for the child's life. */
  perCommand: boolean;
}

export type ChildRequest =
  | { id: number; open: ChildConfig }
  | { id: number; cmd: Cmd }
  | { id: number; end: true };

/** `code`: the command failed with that ArchipelagoError code; `crash`: anything else went wrong. */
export type ChildReply =
  | { id: number; ok: true }
  | { id: number; code: string; message: string }
  | { id: number; crash: string };

interface Stack {
  blockerm: Blocker;
  blockerb: Blocker;
  mapper: Mapper;
  composer: Composer;
}

function openStack(cfg: ChildConfig, open: OpenBlockers): Stack {
  const { blockerm, blockerb } = open(cfg.root, cfg.identity);
  const mapper = new Mapper({
    blockerm,
    blockerb,
    leaseMs: cfg.leaseMs,
    lockTimeoutMs: cfg.lockTimeoutMs,
    ...(cfg.hostLockDir === null ? {} : { hostLocks: new FlockHostLocks(cfg.hostLockDir) }),
  });
  return { blockerm, blockerb, mapper, composer: new Composer({ mapper, blockerb }) };
}

/** Closes the volumes a command opened (what vlmc does when a command ends). */
async function closeOpened(s: Stack): Promise<void> {
  for (const name of s.mapper.openVolumes()) await s.composer.close(name);
}

async function closeStack(s: Stack): Promise<void> {
  await s.mapper.close();
  await s.blockerm.close();
  if (s.blockerb !== s.blockerm) await s.blockerb.close();
}

/** Serves the parent until stdin ends (or an `end` request), then exits. */
export function serveModelChild(open: OpenBlockers): void {
  let cfg: ChildConfig | null = null;
  let kept: Stack | null = null;
  const say = (r: ChildReply) => process.stdout.write(`${JSON.stringify(r)}\n`);

  const handle = async (req: ChildRequest): Promise<ChildReply> => {
    if ('open' in req) {
      if (kept) await closeStack(kept);
      cfg = req.open;
      kept = cfg.perCommand ? null : openStack(cfg, open);
      return { id: req.id, ok: true };
    }
    if ('end' in req) {
      if (kept) await closeStack(kept);
      kept = null;
      return { id: req.id, ok: true };
    }
    if (!cfg) throw new Error('a command before any configuration');
    const s = kept ?? openStack(cfg, open);
    try {
      const e = await failure(s.composer, req.cmd);
      await closeOpened(s);
      return e === null ? { id: req.id, ok: true } : { id: req.id, code: e.code, message: e.message };
    } finally {
      if (s !== kept) await closeStack(s);
    }
  };

  // One request at a time, in order.
  let queue = Promise.resolve();
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const req = JSON.parse(line) as ChildRequest;
    queue = queue.then(async () => {
      try {
        say(await handle(req));
      } catch (e) {
        say({ id: req.id, crash: e instanceof Error ? (e.stack ?? e.message) : String(e) });
      }
      if ('end' in req) process.exit(0);
    });
  });
  lines.on('close', () => void queue.then(() => process.exit(0)));
}
