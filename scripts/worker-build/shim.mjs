// Writes the worker's entry module (shim.js) next to wasm-bindgen's output,
// as worker-build 0.8.7 does: its template (shim.template.js, from
// workers-rs, Apache-2.0) with a handler for each function index.js exports
// and a re-initialising proxy for each class it exports.
// Usage: node scripts/worker-build/shim.mjs <dir holding index.js>
import fs from "node:fs";
import path from "node:path";

const dir = process.argv[2];
const here = path.dirname(new URL(import.meta.url).pathname);
const index = fs.readFileSync(path.join(dir, "index.js"), "utf8");
const SYSTEM = new Set(["__wbg_reset_state", "__worker_init_state"]);
const HANDLERS = new Set(["fetch", "queue", "scheduled", "email", "connect"]);

// Each `export` declaration at a statement boundary.
const decls = [];
for (let i = index.indexOf("export "); i !== -1; i = index.indexOf("export ", i + 1)) {
  const before = i === 0 ? " " : index[i - 1];
  if (/\s|;|\}/.test(before)) decls.push(index.slice(i, i + 300));
}
const functions = [];
const classes = [];
for (const d of decls) {
  let m = d.match(/^export (?:async )?function\s*([A-Za-z0-9_$]+)\s*\(/) || d.match(/^export \{[^}]* as ([A-Za-z0-9_$]+)\s*\}/);
  if (m && !SYSTEM.has(m[1])) functions.push(m[1]);
  m = d.match(/^export class ([A-Za-z0-9_$]+)\s*\{/);
  if (m) classes.push(m[1]);
}
let handlers = "";
for (const f of functions) {
  handlers += HANDLERS.has(f)
    ? `Entrypoint.prototype.${f} = function ${f} (arg) {\n  return exports.${f}.call(this, arg, this.env, this.ctx);\n}\n`
    : `Entrypoint.prototype.${f} = exports.${f};\n`;
}
let shim = fs.readFileSync(path.join(here, "shim.template.js"), "utf8").replace("$HANDLERS", handlers);
for (const c of classes) shim += `export const ${c} = new Proxy(exports.${c}, classProxyHooks);\n`;
fs.writeFileSync(path.join(dir, "shim.js"), shim);
