// The GraphQL-over-HTTP audit of the `graphql-http` package against a running gateway: every
// MUST and every SHOULD. Exits non-zero when any audit fails or warns.
// Usage: node audit.mjs http://127.0.0.1:8000/graphql
import { serverAudits } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs URL');
  process.exit(2);
}
let bad = 0;
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  const result = await audit.fn();
  if (result.status !== 'ok') {
    bad += 1;
    let body = '';
    try {
      body = await result.response.text();
    } catch {
      // Already read by the audit.
    }
    console.log(`${result.status.toUpperCase()} ${audit.id} ${audit.name}: ${result.reason}`);
    if (body) console.log(`  body: ${body.slice(0, 300)}`);
  }
}
console.log(bad === 0 ? 'graphql-http audit: all passed' : `graphql-http audit: ${bad} not ok`);
process.exit(bad === 0 ? 0 : 1);
