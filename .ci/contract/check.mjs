// Checks the bridge's public contract in schemas/ with tools the project did
// not write:
//   1. every *.schema.json is compiled by ajv (JSON Schema 2020-12, strict
//      mode, formats asserted by ajv-formats);
//   2. asyncapi.yaml is parsed and validated by the official AsyncAPI parser,
//      with a schema parser registered for the payloads' schemaFormat
//      application/schema+json;version=2020-12 that compiles each payload
//      with the same ajv (the parser itself knows JSON Schema only up to
//      draft-07).
// Usage: node check.mjs <schemas directory>. Exit status 1 on any error.
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Parser, fromFile, DiagnosticSeverity } from '@asyncapi/parser';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const dir = resolve(process.argv[2] ?? 'schemas');
const FORMAT_2020 = 'application/schema+json;version=2020-12';
let failed = false;
const fail = (msg) => { console.error(`FAIL ${msg}`); failed = true; };

// 1. JSON Schemas.
const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);
const files = readdirSync(dir).filter((f) => f.endsWith('.schema.json')).sort();
if (files.length === 0) fail(`no *.schema.json in ${dir}`);
const docs = new Map();
for (const f of files) {
  const doc = JSON.parse(readFileSync(join(dir, f), 'utf8'));
  if (doc.$schema !== 'https://json-schema.org/draft/2020-12/schema') fail(`${f}: $schema is ${doc.$schema}`);
  docs.set(f, doc);
  try { ajv.addSchema(doc); } catch (e) { fail(`${f}: ${e.message}`); }
}
for (const [f, doc] of docs) {
  try {
    ajv.getSchema(doc.$id) ?? fail(`${f}: not compiled`);
    console.log(`ok   ${f} compiles (ajv ${FORMAT_2020}, strict)`);
  } catch (e) { fail(`${f}: ${e.message}`); }
}

// 2. AsyncAPI.
const parser = new Parser();
// For AsyncAPI 3 the parser hands every multi-format schema to parse()
// (validate() serves AsyncAPI 2 documents): both compile it with ajv.
const compile2020 = (input) => {
  const v = new Ajv2020({ strict: true });
  addFormats(v);
  // The parser has dereferenced every $ref, inlining the referenced files
  // with their $id; drop the copies' $id so the inlined schema stands alone.
  const strip = (x) => {
    if (Array.isArray(x)) return x.map(strip);
    if (x === null || typeof x !== 'object') return x;
    const out = {};
    for (const [k, val] of Object.entries(x)) if (k !== '$id') out[k] = strip(val);
    return out;
  };
  v.compile(strip(input.data));
  payloadsCompiled++;
};
let payloadsCompiled = 0;
parser.registerSchemaParser({
  getMimeTypes: () => [FORMAT_2020],
  validate: async (input) => {
    try { compile2020(input); return []; } catch (e) { return [{ message: e.message, path: input.path }]; }
  },
  parse: async (input) => {
    try { compile2020(input); } catch (e) { throw new Error(`${input.path.join('.')}: ${e.message}`); }
    return input.data;
  },
});
const path = join(dir, 'asyncapi.yaml');
const { document, diagnostics } = await fromFile(parser, path).parse({
  source: pathToFileURL(path).href,
});
for (const d of diagnostics) {
  const where = d.path?.join('.') ?? '';
  const line = `${d.code}: ${d.message} ${where}`;
  if (d.severity === DiagnosticSeverity.Error) fail(`asyncapi.yaml ${line}`);
  else console.log(`note asyncapi.yaml ${line}`);
}
if (!document) {
  fail('asyncapi.yaml was not parsed');
} else {
  const ops = document.operations().all();
  const msgs = document.allMessages().all();
  console.log(`ok   asyncapi.yaml (AsyncAPI ${document.version()}, info.version ${document.info().version()}): ${document.channels().all().length} channels, ${ops.length} operations, ${msgs.length} messages`);
  if (payloadsCompiled < msgs.filter((m) => m.hasPayload()).length) fail(`only ${payloadsCompiled} payload schemas went through the 2020-12 schema parser`);
  else console.log(`ok   ${payloadsCompiled} payload schemas compiled by ajv through the parser's ${FORMAT_2020} schema parser`);
  for (const op of ops) if (op.action() !== 'send') fail(`operation ${op.id()}: action ${op.action()}, want send`);
  for (const m of msgs) {
    if (m.hasPayload() && m.payload().schemaFormat() !== FORMAT_2020) fail(`message ${m.id()}: payload schemaFormat ${m.payload().schemaFormat()}`);
  }
}
process.exit(failed ? 1 : 0);
