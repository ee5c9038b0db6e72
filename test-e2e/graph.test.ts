/**
 * The package graph drawn from the code matches docs/ARCHITECTURE.md: every `@archipelago/*`
 * import of a package's sources (tests and fixtures aside) is declared in its package.json, and
 * points to a package on a lower layer of the document's "Layers" table. No package imports one
 * above it, or one beside it.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './daemons/helpers.js';

const PACKAGES = join(ROOT, 'packages');

/** Layer of each package, from the "| layer | packages |" table of docs/ARCHITECTURE.md. */
function layers(): Map<string, number> {
  const doc = readFileSync(join(ROOT, 'docs/ARCHITECTURE.md'), 'utf8');
  const out = new Map<string, number>();
  const table = doc.slice(doc.indexOf('| layer | packages |'));
  for (const line of table.split('\n').slice(2)) {
    const m = /^\| (\d+) \| (.+) \|$/.exec(line.trim());
    if (!m) break;
    for (const p of (m[2] as string).matchAll(/`([a-z-]+)`/g)) out.set(p[1] as string, Number(m[1]));
  }
  return out;
}

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) {
      if (e !== '__fixtures__' && e !== 'test' && e !== 'node_modules') out.push(...sources(p));
    } else if (/\.(ts|mts)$/.test(e) && !/\.test\.ts$/.test(e) && !e.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** `@archipelago/<name>` packages a source file imports, statically or dynamically. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const names = new Set<string>();
  for (const m of text.matchAll(/(?:from|import\()\s*['"]@archipelago\/([a-z-]+)/g))
    names.add(m[1] as string);
  // A package loaded by a constant name (import(NAME)) is named in a string constant.
  for (const m of text.matchAll(/=\s*'@archipelago\/([a-z-]+)'/g)) names.add(m[1] as string);
  return [...names];
}

describe('the package graph', () => {
  const layer = layers();
  const packages = readdirSync(PACKAGES).filter((p) =>
    statSync(join(PACKAGES, p, 'package.json'), { throwIfNoEntry: false }),
  );

  it('docs/ARCHITECTURE.md places every package on a layer', () => {
    expect(packages.filter((p) => !layer.has(p))).toEqual([]);
  });

  it('no package imports one above it or beside it, and every import is a declared dependency', () => {
    const problems: string[] = [];
    for (const p of packages) {
      const pkg = JSON.parse(readFileSync(join(PACKAGES, p, 'package.json'), 'utf8')) as {
        dependencies?: Record<string, string>;
      };
      const declared = new Set(Object.keys(pkg.dependencies ?? {}));
      // A package of scripts (ganeti-extstorage) has no TypeScript sources to check.
      const src = join(PACKAGES, p, 'src');
      for (const file of existsSync(src) ? sources(src) : []) {
        for (const dep of importsOf(file)) {
          if (dep === p) continue;
          const where = file.slice(ROOT.length + 1);
          if (!declared.has(`@archipelago/${dep}`))
            problems.push(`${where}: @archipelago/${dep} is not a dependency of ${p}`);
          if ((layer.get(dep) ?? 99) >= (layer.get(p) ?? -1))
            problems.push(`${where}: ${p} (layer ${layer.get(p)}) imports ${dep} (layer ${layer.get(dep)})`);
        }
      }
    }
    expect(problems).toEqual([]);
  });
});
