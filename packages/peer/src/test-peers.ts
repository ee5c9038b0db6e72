/**
 * Test harness (not used by the peers themselves): peers as processes of the built dist/main.js
 * on a fresh segment in a temporary directory, started in order, stopped with SIGTERM in reverse
 * order, and the segment and directory removed afterwards.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Segment } from '@archipelago/libxseg/segment';
import type { BlockerPeerOptions, PeerOptions, SegmentOptions } from './options.js';

export const PEER_MAIN = resolve(import.meta.dirname, '../dist/main.js');

/** The ports the four roles serve in these tests. */
export const PORTS = { blockerb: 3, blockerm: 4, mapperd: 5, vlmcd: 6 } as const;

export interface PeerProcess {
  child: ChildProcess;
  /** What the peer wrote to stderr so far (it is also passed through to ours). */
  stderr(): string;
}

export interface PeerHarness {
  /** The temporary directory (pidfiles and logs under run/). */
  readonly dir: string;
  readonly segment: SegmentOptions;
  /** Running peers by role (the latest started for a role). */
  readonly children: Map<string, ChildProcess>;
  /** The common options of a peer serving `port`. */
  base(role: string, port: number): Omit<PeerOptions, 'blocker' | 'mapperd' | 'vlmcd'>;
  /** Spawns a peer without waiting for it. */
  spawn(o: PeerOptions): PeerProcess;
  /** Spawns a peer and waits for its pidfile; fails with its stderr if it exits first. */
  start(o: PeerOptions, timeoutMs?: number): Promise<ChildProcess>;
  /**
   * Options of the four roles on PORTS, in start order: blockers over `blockers` (file blockers in
   * blocks/ and maps/ of the directory by default), mapperd with lock identity `identity`.
   */
  fourRoles(
    identity: string,
    blockers?: { blockerb: BlockerPeerOptions; blockerm: BlockerPeerOptions },
  ): PeerOptions[];
  /** Joins the segment (after the first peer created it). */
  join(): Segment;
  /** Starts `peers` in order, then joins the segment. */
  startAll(peers: PeerOptions[]): Promise<Segment>;
  /** Closes the joined segment, stops every peer, destroys the segment and the directory. */
  teardown(): Promise<void>;
}

export function peerHarness(
  prefix: string,
  opts: { nrOps?: number; env?: NodeJS.ProcessEnv; segment?: Partial<SegmentOptions> } = {},
): PeerHarness {
  const dir = mkdtempSync(join(tmpdir(), `archip-${prefix}-`));
  const segment: SegmentOptions = {
    name: `${prefix}${process.pid}x${Date.now() % 100000}`,
    dynports: 32,
    ports: 96,
    sizeMiB: 128,
    ...opts.segment,
  };
  const all: ChildProcess[] = [];
  const children = new Map<string, ChildProcess>();
  let seg: Segment | undefined;

  const spawnPeer = (o: PeerOptions): PeerProcess => {
    const child = spawn(process.execPath, [PEER_MAIN], {
      stdio: ['ignore', 'inherit', 'pipe'],
      env: { ...process.env, ...opts.env, ARCHIPELAGO_PEER: JSON.stringify(o) },
    });
    all.push(child);
    children.set(o.role, child);
    let err = '';
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
      process.stderr.write(d);
    });
    return { child, stderr: () => err };
  };

  const base = (role: string, port: number) => ({
    role,
    segment,
    portStart: port,
    portEnd: port,
    nrOps: opts.nrOps ?? 16,
    pidfile: join(dir, `run/${role}.pid`),
    logfile: join(dir, `run/${role}.log`),
    logLevel: 2,
  });

  return {
    dir,
    segment,
    children,
    base,
    spawn: spawnPeer,
    fourRoles(identity, blockers) {
      const P = PORTS;
      const b = base;
      return [
        {
          ...b('blockerb', P.blockerb),
          blocker: blockers?.blockerb ?? { type: 'file_blocker', dir: join(dir, 'blocks') },
        },
        {
          ...b('blockerm', P.blockerm),
          blocker: blockers?.blockerm ?? { type: 'file_blocker', dir: join(dir, 'maps') },
        },
        {
          ...b('mapperd', P.mapperd),
          mapperd: { type: 'mapperd', blockerbPort: P.blockerb, blockermPort: P.blockerm, identity },
        },
        { ...b('vlmcd', P.vlmcd), vlmcd: { type: 'vlmcd', blockerPort: P.blockerb, mapperPort: P.mapperd } },
      ];
    },
    async start(o, timeoutMs = 15_000) {
      const { child, stderr } = spawnPeer(o);
      const end = Date.now() + timeoutMs;
      while (!existsSync(o.pidfile)) {
        if (Date.now() > end || child.exitCode !== null)
          throw new Error(`${o.role} did not start: ${stderr()}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return child;
    },
    join() {
      seg ??= Segment.join(segment.name);
      return seg;
    },
    async startAll(peers) {
      for (const o of peers) await this.start(o);
      return this.join();
    },
    async teardown() {
      seg?.close();
      for (const child of [...all].reverse()) {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = new Promise((r) => child.once('exit', r));
          child.kill('SIGTERM');
          await exited;
        }
      }
      try {
        Segment.destroy(segment.name);
      } catch {
        // gone
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
