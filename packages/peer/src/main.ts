/**
 * Entry point of a peer process: `node dist/main.js` with the resolved options as JSON in the
 * ARCHIPELAGO_PEER environment variable (or as the first argument).
 */
import { checkPeerOptions, PEER_OPTIONS_ENV } from './options.js';
import { runPeerMain } from './runtime.js';

const text = process.argv[2] ?? process.env[PEER_OPTIONS_ENV];
if (text === undefined || text === '') {
  process.stderr.write(`peer: pass the options as JSON in ${PEER_OPTIONS_ENV} or as the first argument\n`);
  process.exit(2);
}
let opts: ReturnType<typeof checkPeerOptions>;
try {
  opts = checkPeerOptions(JSON.parse(text));
} catch (e) {
  process.stderr.write(`peer: ${(e as Error).message}\n`);
  process.exit(2);
}
process.title = `archipelago-${opts.role}`;
await runPeerMain(opts);
