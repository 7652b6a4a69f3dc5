/**
 * The console's files: its own (src/server/console/static: index.html, app.js, style.css) and
 * the front-end libraries it runs on, served from the node's node_modules as npm installed
 * them (preact and its hooks, htm, uPlot) — no build step, nothing fetched at run time.
 * Read once at start; every path is a fixed name (no path from the request reaches the disk).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface Asset {
  body: string;
  contentType: string;
}

const JS = 'text/javascript; charset=utf-8';
const CSS = 'text/css; charset=utf-8';
const HTML = 'text/html; charset=utf-8';

/** URL path under /console → [package or null for our own, file inside it, content type]. */
const FILES: Array<[string, string | null, string, string]> = [
  ['/console', null, 'index.html', HTML],
  ['/console/', null, 'index.html', HTML],
  ['/console/app.js', null, 'app.js', JS],
  ['/console/views.js', null, 'views.js', JS],
  ['/console/tx-views.js', null, 'tx-views.js', JS],
  ['/console/style.css', null, 'style.css', CSS],
  ['/console/vendor/preact.js', 'preact', 'dist/preact.module.js', JS],
  ['/console/vendor/hooks.js', 'preact', 'hooks/dist/hooks.module.js', JS],
  ['/console/vendor/htm.js', 'htm', 'dist/htm.module.js', JS],
  ['/console/vendor/uplot.js', 'uplot', 'dist/uPlot.esm.js', JS],
  ['/console/vendor/uplot.css', 'uplot', 'dist/uPlot.min.css', CSS],
];

/** The directory of an installed package, looked up like Node does (node_modules upwards). */
function packageDir(name: string): string {
  let dir = import.meta.dirname;
  for (;;) {
    const candidate = join(dir, 'node_modules', name);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    const up = dirname(dir);
    if (up === dir) throw new Error(`console: the npm package ${name} is not installed`);
    dir = up;
  }
}

/** Our own files: beside this module (src/, and dist/ where the build copies them). */
function staticDir(): string {
  return join(import.meta.dirname, 'static');
}

/** Every console file by URL path. */
export function loadAssets(): Map<string, Asset> {
  const out = new Map<string, Asset>();
  for (const [path, pkg, file, contentType] of FILES) {
    const full = join(pkg === null ? staticDir() : packageDir(pkg), file);
    // The libraries' source-map comments name files we do not serve.
    const body = readFileSync(full, 'utf8')
      .replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n')
      // preact's hooks import "preact": the browser resolves it beside them (no import map).
      .replace(/from\s*["']preact["']/g, 'from"./preact.js"');
    out.set(path, { body, contentType });
  }
  return out;
}
