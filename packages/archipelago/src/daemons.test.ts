import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '@archipelago/cli';
import { afterEach, describe, expect, it } from 'vitest';
import { peerOptions } from './daemons.js';

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function config(blockerb: string): string {
  dir = mkdtempSync(join(tmpdir(), 'archip-peeropts-'));
  const path = join(dir, 'archipelago.conf');
  writeFileSync(
    path,
    `[XSEG]
SEGMENT_PORTS = 64
SEGMENT_DYNPORTS = 16
SEGMENT_SIZE = 64
VTOOL_START = 40
VTOOL_END = 50
segment_name = peeropts

[PEERS]
ROLES = blockerb blockerm mapperd vlmcd

[blockerb]
portno_start = 10
portno_end = 10
nr_ops = 16
${blockerb}

[blockerm]
type = file_blocker
portno_start = 12
portno_end = 12
nr_ops = 16
archip_dir = maps

[mapperd]
type = mapperd
portno_start = 11
portno_end = 11
nr_ops = 16
blockerb_port = 10
blockerm_port = 12

[vlmcd]
type = vlmcd
portno_start = 20
portno_end = 30
nr_ops = 16
blocker_port = 10
mapper_port = 11
`,
  );
  return path;
}

describe("peerOptions: a blocker section's sync reaches its daemon", () => {
  it('file_blocker: sync = flush makes the peer write back; the default syncs every write', () => {
    const wb = loadConfig(config('type = file_blocker\narchip_dir = blocks\nsync = flush'));
    expect(peerOptions(wb, 'blockerb').blocker).toMatchObject({ type: 'file_blocker', sync: 'flush' });
    expect(peerOptions(wb, 'blockerm').blocker).toMatchObject({ type: 'file_blocker', sync: 'always' });
  });

  it('rados_blocker: sync = flush as well', () => {
    const wb = loadConfig(config('type = rados_blocker\npool = blocks\nsync = flush'));
    expect(peerOptions(wb, 'blockerb').blocker).toMatchObject({
      type: 'rados_blocker',
      pool: 'blocks',
      sync: 'flush',
    });
  });
});
