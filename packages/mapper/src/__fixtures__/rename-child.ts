/**
 * A `vlmc rename` as a process of its own, for the kill -9 test (rename-kill.test.ts): renames
 * `argv[3]` to `argv[4]` in the file store `argv[2]` (maps and data in one directory).
 */
import { FileBlocker } from '@archipelago/blocker-file';
import { Mapper } from '../mapper.js';

const [dir, from, to] = process.argv.slice(2) as [string, string, string];
const b = new FileBlocker({ dir, identity: 'crashhost_embedded' });
const m = new Mapper({ blockerm: b, blockerb: b });
await m.rename(from, to);
await m.close();
await b.close();
