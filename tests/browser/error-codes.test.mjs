// The error codes a page can see, in one place: the server's (its ErrorCode enum, as serde
// writes it) and the SDK's own (every code its modules, sdk/src/, can throw) must be exactly
// the .d.ts unions, so the types cannot drift from either side again. Reads the sources; no
// browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const read = (path) => readFileSync(join(root, path), 'utf8');

const RENAME = {
  snake_case: (v) => v.replace(/(?<!^)([A-Z])/g, '_$1').toLowerCase(),
  'kebab-case': (v) => v.replace(/(?<!^)([A-Z])/g, '-$1').toLowerCase(),
  lowercase: (v) => v.toLowerCase(),
};

/** The wire names of `enum ErrorCode` in protocol.rs: serde's rename_all on the enum, or a
 * variant's own rename. */
function serverCodes() {
  const src = read('signalling/src/protocol.rs');
  const m = src.match(/((?:#\[[^\]]*\]\s*)*)pub enum ErrorCode \{([\s\S]*?)\n\}/);
  assert.ok(m, 'protocol.rs has pub enum ErrorCode');
  const renameAll = m[1].match(/rename_all\s*=\s*"([^"]+)"/)?.[1];
  assert.ok(!renameAll || RENAME[renameAll], `rename_all = "${renameAll}" is one this test knows`);
  const body = m[2].replace(/^\s*\/\/.*$/gm, '');
  const codes = [];
  for (const v of body.matchAll(/((?:#\[[^\]]*\]\s*)*)([A-Z]\w*)\s*(?:,|$)/g)) {
    const own = v[1].match(/rename\s*=\s*"([^"]+)"/)?.[1];
    codes.push(own ?? (renameAll ? RENAME[renameAll](v[2]) : v[2]));
  }
  assert.ok(codes.length >= 10, `read ${codes.length} codes from ErrorCode`);
  return codes;
}

/** Every code the SDK can give a WebRTCaiError: literal first arguments, and the few places
 * where the code is a variable, each followed to where its values come from. Read in the
 * modules as written (webrtcai.js is their bundle, which esbuild prints in its own style). */
function sdkCodes() {
  const modules = readdirSync(join(root, 'sdk', 'src')).filter((f) => f.endsWith('.js')).sort();
  assert.ok(modules.length > 0, 'sdk/src has the SDK modules');
  const src = modules.map((f) => read(`sdk/src/${f}`)).join('\n');
  const codes = new Set();
  for (const m of src.matchAll(/new WebRTCaiError\(\s*'([^']+)'/g)) codes.add(m[1]);
  const dynamic = [...src.matchAll(/new WebRTCaiError\(\s*([^'\s,][^,]*),/g)].map((m) => m[1]);
  for (const arg of dynamic) {
    // The server's reply carries one of the server's codes.
    if (arg === 'msg.error.code') continue;
    assert.equal(arg, 'code', `a WebRTCaiError whose code comes from "${arg}": teach this test where it comes from`);
  }
  // `code` in capture(): the media table and its fallback; in _abandon(): its callers.
  const table = src.match(/const MEDIA_ERRORS = \{([\s\S]*?)\};/);
  assert.ok(table, 'sdk/src has the MEDIA_ERRORS table');
  for (const m of table[1].matchAll(/:\s*'([^']+)'/g)) codes.add(m[1]);
  for (const m of src.matchAll(/MEDIA_ERRORS\[[^\]]*\]\s*\?\?\s*'([^']+)'/g)) codes.add(m[1]);
  for (const m of src.matchAll(/_abandon\(\s*'([^']+)'/g)) codes.add(m[1]);
  assert.equal(dynamic.filter((a) => a === 'code').length, 2, 'two call sites take a variable `code` (capture, _abandon)');
  return [...codes];
}

/** The string literals of `export type NAME = …;` in the .d.ts. */
function union(dts, name) {
  const code = dts.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  const m = code.match(new RegExp(`export type ${name} =([^;]*);`));
  assert.ok(m, `webrtcai.d.ts has export type ${name}`);
  return [...m[1].matchAll(/'([^']+)'/g)].map((x) => x[1]);
}

const sorted = (xs) => [...new Set(xs)].sort();

test('the .d.ts error codes are exactly the server’s and the SDK’s', () => {
  const dts = read('sdk/webrtcai.d.ts');
  const server = serverCodes();
  const sdk = sdkCodes();
  const declaredServer = union(dts, 'ServerErrorCode');
  const declaredSdk = union(dts, 'SdkErrorCode');
  assert.deepEqual(sorted(declaredServer), sorted(server), 'ServerErrorCode lists ErrorCode in protocol.rs');
  assert.deepEqual(sorted(declaredSdk), sorted(sdk.filter((c) => !server.includes(c))), "SdkErrorCode lists the SDK's own codes");
  assert.match(dts, /export type ErrorCode = ServerErrorCode \| SdkErrorCode;/);
  assert.match(dts, /readonly code: ErrorCode;/);
  // The protocol document names every server code too.
  const doc = read('docs/protocol.md');
  for (const c of server) assert.ok(doc.includes(`\`${c}\``), `docs/protocol.md names ${c}`);
});
