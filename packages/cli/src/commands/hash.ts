import { Args, Flags } from '@oclif/core';
import { VlmcCommand } from '../base.js';
import { ProgressBar } from '../progress.js';
import { formatSize } from '../size.js';

export interface HashOutput {
  /** Name of the hashed map (clone it with `vlmc create <vol> --snap <name>`). */
  name: string;
  /** Pithos top-level hash (Merkle root), the X-Object-Hash of the same file in Pithos. */
  root: string;
  snapshot: string;
  size: number;
  blocksize: number;
  blocks: number;
  /** Blocks backed by content objects (not the zero block). */
  contentBlocks: number;
  /** An identical hashed map existed already (nothing was written). */
  existed: boolean;
  seconds: number;
}

export default class Hash extends VlmcCommand {
  static override summary =
    'Content-address a snapshot: build a read-only hashed map named by its Merkle root.';

  static override description =
    `Every non-zero block of the snapshot is stored once under the SHA-256 of its bytes (trailing \
zeros stripped, as Pithos does), so identical blocks of any image or volume share one object. \
The result is a read-only map of those content names, zero blocks kept, named by the Pithos \
top-level (Merkle) hash, which is printed. Clone it like any snapshot: \
vlmc create <volume> --snap <name>. Hashing the same content again finds the same map. \
A progress bar is drawn on stderr when it is a terminal.`;

  static override examples = [
    '<%= config.bin %> <%= command.id %> debian-12-snap',
    '<%= config.bin %> create vm1 --snap $(<%= config.bin %> <%= command.id %> debian-12-snap)',
  ];

  static override args = {
    snapshot: Args.string({ required: true, description: 'Snapshot (read-only map) to hash.' }),
  };

  static override flags = {
    parallel: Flags.integer({ summary: 'Blocks hashed at once.', default: 8, min: 1, max: 64 }),
  };

  async run(): Promise<HashOutput> {
    const { args, flags } = await this.parse(Hash);
    const rt = await this.runtime();
    const t0 = performance.now();
    let bar: ProgressBar | undefined;
    const total = this.progressAllowed() ? (await rt.mapper.info(args.snapshot)).size : 0;
    const r = await rt.mapper
      .hash(args.snapshot, {
        parallelism: flags.parallel,
        ...(this.progressAllowed()
          ? {
              onProgress: (_d: number, _n: number, bytes: number) => {
                bar ??= new ProgressBar('hash', total);
                bar.update(bytes);
              },
            }
          : {}),
      })
      .finally(() => bar?.finish());
    const seconds = (performance.now() - t0) / 1000;
    const out: HashOutput = {
      name: r.name,
      root: r.root,
      snapshot: args.snapshot,
      size: r.size,
      blocksize: r.blocksize,
      blocks: r.hashes.length,
      contentBlocks: r.hashes.filter((h) => h !== ZERO).length,
      existed: r.existed,
      seconds,
    };
    if (process.stderr.isTTY && !this.jsonEnabled()) {
      process.stderr.write(
        `hashed ${args.snapshot} (${formatSize(r.size)}, ${out.contentBlocks} content blocks) in ${seconds.toFixed(2)} s${r.existed ? ' (already hashed)' : ''}\n`,
      );
    }
    this.say(r.name);
    return out;
  }
}

const ZERO = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
