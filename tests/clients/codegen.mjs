// graphql-codegen against a running gateway: the schema is read by introspection over HTTP, as
// a frontend's codegen.ts does, and TypeScript types are generated for it.
// Usage: node codegen.mjs http://127.0.0.1:8000/graphql [token]
import { generate } from '@graphql-codegen/cli';

const url = process.argv[2];
const token = process.argv[3];
const schema = token ? { [url]: { headers: { Authorization: `Bearer ${token}` } } } : url;
const [out] = await generate(
  {
    schema,
    generates: { 'types.ts': { plugins: ['typescript'] } },
    silent: true,
  },
  false,
);
const ts = out.content;
const expect = [
  'export type Query = {',
  'sessions: CrawlSessionConnection;',
  'export type CrawlSessionConnection = {',
  'export enum BugPriority {',
  "Decimal: { input:",
];
for (const e of expect) {
  if (!ts.includes(e)) {
    console.error(`codegen: the generated types lack ${JSON.stringify(e)}`);
    process.exit(1);
  }
}
console.log(`codegen: ${ts.split('\n').length} lines of TypeScript types generated from the gateway`);
