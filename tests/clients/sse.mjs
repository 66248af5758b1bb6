// GraphQL over Server-Sent Events with the graphql-sse client, end to end: a resumable
// subscription on one gateway, that gateway stopped mid-stream, and the client's own retry
// resuming on another gateway with Last-Event-ID set to the last cursor it received.
// Usage: node sse.mjs <stream url 1> <stream url 2> <pid of gateway 1> <session id>
import { createClient } from 'graphql-sse';

const [first, second, pid, sid] = process.argv.slice(2);
let url = first;
let last = null;
const client = createClient({
  url: () => url,
  // The library does not track event ids itself; a client resumes by sending its last cursor.
  headers: () => (last ? { 'last-event-id': last } : {}),
  retryAttempts: 10,
  retry: () => new Promise((r) => setTimeout(r, 200)),
});

const graphql = (stream, query, variables) =>
  fetch(stream.replace(/\/stream$/, ''), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  }).then((r) => r.json());
const report = async (stream, title) => {
  const r = await graphql(
    stream,
    'mutation($s: UUID!, $t: String!) { reportBugs(sessionId: $s, bugs: [{ title: $t, category: FUNCTIONAL, priority: LOW, confidence: 0.5 }]) { id } }',
    { s: sid, t: title },
  );
  if (r.errors) throw new Error(JSON.stringify(r.errors));
};

// A plain query over the same transport answers once.
const count = await new Promise((resolve, reject) => {
  let result;
  client.subscribe(
    { query: 'query { sessions(first: 1) { totalCount } }' },
    { next: (r) => (result = r), error: reject, complete: () => resolve(result) },
  );
});
if (!(count.data.sessions.totalCount >= 1)) throw new Error(JSON.stringify(count));

const seen = [];
const expected = 5;
await new Promise((resolve, reject) => {
  const done = setTimeout(() => reject(new Error(`timed out with ${JSON.stringify(seen)}`)), 30000);
  const stop = client.subscribe(
    {
      query:
        'subscription($s: UUID!) { sessionEvents(sessionId: $s, after: "0.0") { cursor kind } }',
      variables: { s: sid },
    },
    {
      next: async (r) => {
        if (r.errors) return reject(new Error(JSON.stringify(r.errors)));
        const e = r.data.sessionEvents;
        seen.push(e.cursor);
        last = e.cursor;
        if (seen.length === 1) {
          await report(first, 'one');
          await report(first, 'two');
        }
        if (seen.length === 3) {
          // The first gateway goes away; what follows is written through the second one.
          url = second;
          process.kill(Number(pid), 'SIGTERM');
          await report(second, 'three');
          await report(second, 'four');
        }
        if (seen.length >= expected) {
          clearTimeout(done);
          stop();
          resolve();
        }
      },
      error: (e) => reject(e),
      complete: () => {},
    },
  );
});
client.dispose();
console.log(JSON.stringify(seen));
