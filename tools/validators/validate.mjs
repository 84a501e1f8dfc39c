// Validates DeepLens's contracts with independent, widely used validators:
//   node validate.mjs openapi  FILE   -> @apidevtools/swagger-parser (OpenAPI 3.x schema + $refs)
//   node validate.mjs asyncapi FILE   -> @asyncapi/parser (AsyncAPI 3.x, with its Spectral ruleset)
// Prints every diagnostic; exits 1 on an error and, for AsyncAPI, also on a warning (the issue
// asks for a document with none), 0 when the document is clean.
import { readFile } from "node:fs/promises";
import SwaggerParser from "@apidevtools/swagger-parser";
import { Parser, fromFile } from "@asyncapi/parser";

const [kind, file] = process.argv.slice(2);
if (!kind || !file) {
  console.error("usage: node validate.mjs openapi|asyncapi FILE");
  process.exit(2);
}

if (kind === "openapi") {
  try {
    const api = await SwaggerParser.validate(file);
    console.log(`${file}: valid OpenAPI ${api.openapi}, ${Object.keys(api.paths).length} paths`);
  } catch (e) {
    console.error(`${file}: INVALID: ${e.message}`);
    process.exit(1);
  }
} else if (kind === "asyncapi") {
  const parser = new Parser();
  const { document, diagnostics } = await fromFile(parser, file).parse();
  const names = ["error", "warning", "information", "hint"];
  let bad = 0;
  for (const d of diagnostics) {
    const severity = names[d.severity] ?? String(d.severity);
    if (d.severity <= 1) bad++;
    console.log(`${file}: ${severity}: ${d.code}: ${d.message} at /${d.path.join("/")}`);
  }
  if (!document) {
    console.error(`${file}: INVALID AsyncAPI document`);
    process.exit(1);
  }
  console.log(`${file}: AsyncAPI ${document.version()}, ${document.channels().length} channels, ${bad} errors/warnings`);
  process.exit(bad ? 1 : 0);
} else {
  console.error(`unknown kind ${kind}`);
  process.exit(2);
}
