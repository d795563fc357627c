'use strict';
// Finds libboxlite. Order (the first that exists wins):
//   1. $BOXLITE_LIBRARY (a path to the library itself; if set and missing, nothing else is tried);
//   2. an installed prefix: `pkg-config --variable=libdir boxlite`;
//   3. a source tree this package lies in: target/release, then target/debug.
// The library finds its helpers (shim, guest kernel...) relative to itself.
const fs = require('node:fs');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const LIBRARY_NAME = 'libboxlite.so';

class LibraryNotFound extends Error {
  constructor(searched) {
    super(`libboxlite not found; searched:\n  ${searched.join('\n  ')}\n` +
      'Set BOXLITE_LIBRARY to the library, install boxlite (pkg-config), or build it (cargo build -p boxlite).');
    this.name = 'LibraryNotFound';
    this.searched = searched;
  }
}

function pkgConfigLibdir() {
  try {
    const out = execFileSync('pkg-config', ['--variable=libdir', 'boxlite'], { encoding: 'utf8', timeout: 10000, stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (!out) return [null, 'pkg-config --variable=libdir boxlite (no boxlite.pc on PKG_CONFIG_PATH)'];
    return [out, `pkg-config --variable=libdir boxlite -> ${out}`];
  } catch (e) {
    if (e.code === 'ENOENT') return [null, 'pkg-config (not installed)'];
    return [null, 'pkg-config --variable=libdir boxlite (no boxlite.pc on PKG_CONFIG_PATH)'];
  }
}

/** [path or null, how it was found] for every place searched, in order. */
function candidates(env = process.env, here = __dirname) {
  const found = [];
  const explicit = env.BOXLITE_LIBRARY;
  found.push([explicit || null, explicit ? `$BOXLITE_LIBRARY=${explicit}` : '$BOXLITE_LIBRARY (unset)']);
  const [libdir, how] = pkgConfigLibdir();
  found.push([libdir ? path.join(libdir, LIBRARY_NAME) : null, how]);
  let dir = path.resolve(here);
  let tree = null;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'Cargo.toml')) && fs.existsSync(path.join(dir, 'include', 'boxlite.h'))) { tree = dir; break; }
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  if (tree) {
    for (const profile of ['release', 'debug']) {
      const p = path.join(tree, 'target', profile, LIBRARY_NAME);
      found.push([p, `source tree: ${p}`]);
    }
  } else {
    found.push([null, 'source tree (this package is not inside one)']);
  }
  return found;
}

/** The path of the library to load; throws LibraryNotFound naming every place searched. */
function findLibrary(env = process.env, here = __dirname) {
  const explicit = env.BOXLITE_LIBRARY;
  if (explicit) {
    if (fs.existsSync(explicit)) return explicit;
    throw new LibraryNotFound([`$BOXLITE_LIBRARY=${explicit} (no such file)`]);
  }
  const tried = candidates(env, here);
  for (const [p] of tried.slice(1)) if (p && fs.existsSync(p)) return p;
  throw new LibraryNotFound(tried.map(([p, how]) => how + (p === null ? '' : ' (missing)')));
}

module.exports = { findLibrary, candidates, LibraryNotFound, LIBRARY_NAME };
