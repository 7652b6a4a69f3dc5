#!/usr/bin/env node
// The package's bin: the compiled CLI in dist/ (plain Node, no loader). `npm run build`
// makes dist/; `npm pack`, `npm publish` and a git install run it through `prepare`.
// The repo's own dev loop runs the sources through tsx instead (`npm start`, the tests).
import { existsSync } from 'node:fs';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('concord: dist/ is missing: run `npm run build` in this checkout first\n');
  process.exit(1);
}
await import(main.href);
