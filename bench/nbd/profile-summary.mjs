#!/usr/bin/env node
/**
 * Summarizes a V8 .cpuprofile (from `run.mjs --profile DIR`): self time per function and the
 * inclusive time of the top frames, so the hot paths of the server show without DevTools.
 *
 *   node bench/nbd/profile-summary.mjs FILE.cpuprofile [--top 30]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values: o, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '30' } },
});
if (positionals.length !== 1) throw new Error('usage: profile-summary.mjs FILE.cpuprofile [--top N]');
const prof = JSON.parse(readFileSync(positionals[0], 'utf8'));
const top = Number(o.top);

const nodes = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Sample time: timeDeltas[i] is the time before sample i.
const selfUs = new Map();
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i];
  selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
}
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

const key = (n) => {
  const f = n.callFrame;
  const url = f.url ? f.url.replace(/^.*\/packages\//, '').replace(/^file:\/\//, '') : '';
  return `${f.functionName || '(anonymous)'} ${url ? `${url}:${f.lineNumber + 1}` : ''}`.trim();
};

const self = new Map();
const incl = new Map();
for (const [id, us] of selfUs) {
  const n = nodes.get(id);
  const k = key(n);
  self.set(k, (self.get(k) ?? 0) + us);
  // inclusive: count once per distinct function on the stack
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const kk = key(nodes.get(cur));
    if (seen.has(kk)) continue;
    seen.add(kk);
    incl.set(kk, (incl.get(kk) ?? 0) + us);
  }
}
const pct = (us) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
const show = (title, m) => {
  console.log(`\n${title}`);
  for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(`${pct(us)}  ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}`);
};
console.log(`profile: ${(total / 1e6).toFixed(2)} s of samples`);
show('self time', self);
show('inclusive time', incl);
