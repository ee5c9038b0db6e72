// Prints the plain closing line CI reads: "N passed, N failed, N skipped".
import { readFileSync } from 'node:fs';

const file = process.argv[2] ?? '.vitest-results.json';
let r;
try {
  r = JSON.parse(readFileSync(file, 'utf8'));
} catch (e) {
  console.log(`0 passed, 1 failed (no test results in ${file}: ${e.message})`);
  process.exit(1);
}
// A file that failed without a failed test (it did not load, or a beforeAll/afterAll threw and
// its tests were skipped) counts as one failure.
const failedSuites = (r.testResults ?? []).filter(
  (s) => s.status === 'failed' && !(s.assertionResults ?? []).some((a) => a.status === 'failed'),
);
for (const s of failedSuites) console.log(`suite failed to run: ${s.name}\n${s.message ?? ''}`);
const failed = r.numFailedTests + failedSuites.length;
console.log(`${r.numPassedTests} passed, ${failed} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
process.exit(failed > 0 ? 1 : 0);
