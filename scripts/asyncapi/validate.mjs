// Validates an AsyncAPI document with the official parser (@asyncapi/parser): the JSON Schema
// of the specification, its semantic rules (operations' channels and messages exist, ids are
// unique, ...) and every schema in its declared schemaFormat. Prints every diagnostic and
// exits 1 when any has error severity (or the document could not be parsed at all).
//
// Usage: node validate.mjs NODE_MODULES_PARENT FILE
// The first argument is the directory whose node_modules holds the parser (installed by
// scripts/check-asyncapi.sh into a cache directory keyed by package-lock.json).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

const [modules, file] = process.argv.slice(2);
if (!modules || !file) {
  console.error('usage: node validate.mjs NODE_MODULES_PARENT FILE');
  process.exit(64);
}
const require = createRequire(join(resolve(modules), 'package.json'));
const { Parser } = require('@asyncapi/parser');
const { version } = require('@asyncapi/parser/package.json');

// Spectral's DiagnosticSeverity: 0 error, 1 warning, 2 information, 3 hint.
const SEVERITY = ['error', 'warning', 'information', 'hint'];

const { document, diagnostics } = await new Parser().parse(readFileSync(file, 'utf8'), {
  source: resolve(file),
});
for (const d of diagnostics) {
  const where = d.path && d.path.length ? d.path.join('.') : '(document)';
  const line = d.range ? `:${d.range.start.line + 1}` : '';
  console.log(`${file}${line}: ${SEVERITY[d.severity] ?? d.severity} ${d.code}: ${d.message} at ${where}`);
}
const errors = diagnostics.filter((d) => d.severity === 0);
if (errors.length > 0 || document === undefined) {
  console.error(`${file}: rejected by @asyncapi/parser ${version} (${errors.length} error(s))`);
  process.exit(1);
}
console.log(
  `${file}: valid AsyncAPI ${document.version()} (@asyncapi/parser ${version}): ` +
    `${document.channels().length} channels, ${document.operations().length} operations, ` +
    `${document.messages().length} messages`,
);
