/**
 * Fails on any import cycle among src/, workers/ and bench/, type-only and dynamic imports
 * included, at two levels: between files, and between folders (a folder is a layer: src/compute
 * importing workers/kernels/blas while that imports src/compute back is a cycle even when no two
 * files import each other). The imports are read by dpdm; a folder's edges are its files' edges.
 *
 *   npm run check:cycles
 */
import { dirname } from 'node:path';
import dpdm, { type Dependency, type DependencyTree } from 'dpdm';

// dpdm is CommonJS: its functions come through the default export.
const { parseCircular, parseDependencyTree, shortenTree, uniqueCirculars } = dpdm;

const roots = ['src/**/*.ts', 'workers/**/*.ts', 'bench/**/*.ts'];
const cwd = process.cwd();

function project(id: string | null): id is string {
  return id !== null && !id.startsWith('node_modules/') && !id.includes('/node_modules/') && !id.startsWith('..');
}

const tree: DependencyTree = shortenTree(
  cwd,
  await parseDependencyTree(roots, { context: cwd, transform: false, skipDynamicImports: false, exclude: /node_modules/ }),
);
const files = Object.keys(tree).filter(project);

/** Folder → folder edges, with the file imports behind each (for the report). */
const folderTree: Record<string, Dependency[]> = {};
const because = new Map<string, string[]>();
for (const file of files) {
  const from = dirname(file);
  folderTree[from] ??= [];
  for (const dep of tree[file] ?? []) {
    if (!project(dep.id)) continue;
    const to = dirname(dep.id);
    if (to === from) continue;
    const key = `${from} -> ${to}`;
    if (!because.has(key)) {
      because.set(key, []);
      folderTree[from].push({ issuer: from, request: to, kind: 'StaticImport' as Dependency['kind'], id: to });
    }
    because.get(key)!.push(`${file} -> ${dep.id}`);
  }
}

const fileCycles = uniqueCirculars(parseCircular(tree, false));
const folderCycles = uniqueCirculars(parseCircular(folderTree, false));

console.log(`${files.length} files in ${Object.keys(folderTree).length} folders (${roots.join(', ')})`);
if (fileCycles.length === 0) console.log('no import cycle between files');
for (const [i, c] of fileCycles.entries()) console.log(`file cycle ${i + 1}: ${[...c, c[0]].join(' -> ')}`);
if (folderCycles.length === 0) console.log('no import cycle between folders');
for (const [i, c] of folderCycles.entries()) {
  console.log(`folder cycle ${i + 1}: ${[...c, c[0]].join(' -> ')}`);
  for (let k = 0; k < c.length; k++) {
    for (const edge of because.get(`${c[k]} -> ${c[(k + 1) % c.length]}`) ?? []) console.log(`    ${edge}`);
  }
}
if (fileCycles.length + folderCycles.length > 0) process.exit(1);
