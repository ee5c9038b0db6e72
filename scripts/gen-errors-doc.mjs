// Regenerates docs/errors.md from the error registry (packages/libxseg/src/errors.ts, built).
import { writeFileSync } from 'node:fs';

const { ERROR_CODES } = await import('../packages/libxseg/dist/errors.js');
let s = `# Error codes

Every error Archipelago reports carries one of these codes. Codes are stable: a code never
changes meaning and a retired code is never reused; messages may change. Programming mistakes
(wrong argument types) are plain \`TypeError\`s without a code.

Every tool (\`vlmc\`, \`archipelago\`, \`xseg\`) prints errors as one line, \`<tool>: <CODE>: <message>\`, and
exits with status 1; with
\`--json\` it prints \`{"error":{"code","message","details"}}\`.

| code | meaning |
|---|---|
`;
for (const [k, v] of Object.entries(ERROR_CODES)) s += `| \`${k}\` | ${v} |\n`;
writeFileSync(new URL('../docs/errors.md', import.meta.url), s);
