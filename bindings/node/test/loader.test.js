'use strict';
// The library is found (explicit path, pkg-config, source tree) or the error names every place searched.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { findLibrary, candidates, LibraryNotFound } = require('../lib/loader');
const { REPO } = require('./helpers');

test('an explicit BOXLITE_LIBRARY wins, and a missing one is named, not replaced', () => {
  const lib = path.join(REPO, 'target/debug/libboxlite.so');
  assert.equal(findLibrary({ BOXLITE_LIBRARY: lib }), lib);
  assert.throws(() => findLibrary({ BOXLITE_LIBRARY: '/nowhere/libboxlite.so' }), (e) => {
    assert.ok(e instanceof LibraryNotFound);
    assert.match(e.message, /\/nowhere\/libboxlite\.so/);
    return true;
  });
});

test('the source tree is searched: release, then debug', () => {
  const places = candidates({}, __dirname).map(([, how]) => how);
  const release = places.findIndex((h) => h.includes('target/release'));
  const debug = places.findIndex((h) => h.includes('target/debug'));
  assert.ok(release > 0 && debug > release, places.join('\n'));
  assert.ok(places[1].startsWith('pkg-config'), places[1]);
});

test('nothing found: the error names every place searched', () => {
  const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'bxjs-loader-'));
  try {
    assert.throws(() => findLibrary({ PKG_CONFIG_PATH: outside, PATH: process.env.PATH }, outside), (e) => {
      assert.ok(e instanceof LibraryNotFound);
      assert.equal(e.searched.length, 3, e.message);
      assert.match(e.message, /BOXLITE_LIBRARY \(unset\)/);
      assert.match(e.message, /pkg-config/);
      assert.match(e.message, /source tree \(this package is not inside one\)/);
      return true;
    });
  } finally {
    fs.rmSync(outside, { recursive: true, force: true });
  }
});
