// Writes every SDK example of the README (the module script of the ```html block, each ```js
// block) into check/examples/ as JavaScript that `tsc` checks against the declarations (checkJs):
// an example that calls something the declarations do not have, with the wrong arguments, or
// reads a field an event does not carry, fails the check. Run before `tsc -p tsconfig.json`
// (`npm run check` does both).
import { readFileSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const readme = readFileSync(join(here, '..', '..', 'README.md'), 'utf8');
const out = join(here, 'examples');
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

// What the ```js snippets take as given (a joined session, a participant's uid, some state)
// is declared in check/globals.d.ts.

let n = 0;
for (const [, lang, body] of readme.matchAll(/```(html|js)\n([\s\S]*?)```/g)) {
  let code;
  if (lang === 'html') {
    const script = /<script type="module">([\s\S]*?)<\/script>/.exec(body);
    if (!script) continue;
    // The page imports the SDK from the server; here, from the declarations.
    code = script[1].replace(/import \{ WebRTCai \} from '[^']+';/, "import { WebRTCai } from '../../webrtcai.js';");
    code = `${code}\nexport {};\n`;
  } else {
    code = `${body}\nexport {};\n`;
  }
  n += 1;
  writeFileSync(join(out, `readme-${n}.js`), `// From README.md (example ${n}); written by check/readme-examples.mjs.\n${code}`);
}
if (n === 0) throw new Error('no SDK example found in README.md');
console.log(`${n} README examples written to check/examples/`);
