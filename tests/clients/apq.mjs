// Apollo Client's PersistedQueryLink against a running gateway: the first request of an
// operation sends only its hash and learns it is unknown, the retry registers the document, and
// later requests send the hash alone, as GETs for queries (which the gateway answers with an
// ETag). Exits non-zero on the first failure.
// Usage: node apq.mjs http://127.0.0.1:8000/graphql [token]
import { createHash } from 'node:crypto';
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';

const url = process.argv[2];
const token = process.argv[3];
const seen = [];
// Records what goes over the wire.
const recordingFetch = async (input, init) => {
  const u = new URL(typeof input === 'string' ? input : input.url);
  const method = (init && init.method) || 'GET';
  const body = init && typeof init.body === 'string' ? JSON.parse(init.body) : null;
  const response = await fetch(input, init);
  seen.push({
    method,
    hasQuery: Boolean(u.searchParams.get('query') || (body && body.query)),
    hash: Boolean(u.searchParams.get('extensions') || (body && body.extensions)),
    status: response.status,
    etag: response.headers.get('etag'),
  });
  return response;
};

function check(ok, what, detail) {
  if (!ok) {
    console.error(`FAIL ${what}${detail === undefined ? '' : `: ${JSON.stringify(detail)}`}`);
    process.exit(1);
  }
  console.log(`ok ${what}`);
}

const sha256 = (text) => createHash('sha256').update(text).digest('hex');
const client = new ApolloClient({
  link: new PersistedQueryLink({ sha256, useGETForHashedQueries: true }).concat(
    new HttpLink({
      uri: url,
      fetch: recordingFetch,
      headers: token ? { authorization: `Bearer ${token}` } : {},
    }),
  ),
  cache: new InMemoryCache(),
});

const COUNT = gql`query ApqCount { sessions { totalCount } }`;
const first = await client.query({ query: COUNT, fetchPolicy: 'network-only' });
check(typeof first.data.sessions.totalCount === 'number', 'apq: the query ran', first.data);
check(seen.length === 2, 'apq: a miss, then a registration', seen);
check(seen[0].method === 'GET' && !seen[0].hasQuery && seen[0].hash, 'apq: the first request sends only the hash, as a GET', seen[0]);
check(seen[1].hasQuery && seen[1].hash, 'apq: the retry sends the document with its hash', seen[1]);

seen.length = 0;
const again = await client.query({ query: COUNT, fetchPolicy: 'network-only' });
check(again.data.sessions.totalCount === first.data.sessions.totalCount, 'apq: the hash alone runs it');
check(seen.length === 1 && seen[0].method === 'GET' && !seen[0].hasQuery && seen[0].hash,
  'apq: later requests are GETs with the hash alone', seen);
check(seen[0].status === 200 && Boolean(seen[0].etag), 'apq: the GET answer carries an ETag', seen[0]);

// Mutations are never sent as GETs.
seen.length = 0;
const created = await client.mutate({
  mutation: gql`mutation ApqCreate { createSession(input: { baseUrl: "https://apq.example/" }) { id } }`,
});
check(Boolean(created.data.createSession.id), 'apq: a persisted mutation ran');
check(seen.every((s) => s.method === 'POST'), 'apq: mutations go by POST', seen);
console.log('apq: persisted queries work with Apollo Client');
process.exit(0);
