// Apollo Client, urql and the graphql-ws client against a running gateway, as frontends use
// them: a nested query, a paginated fetchMore (Apollo's relayStylePagination), a mutation that
// updates the normalized cache, and a subscription. Exits non-zero on the first failure.
// Usage: node clients.mjs http://127.0.0.1:8000/graphql [token]
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition, relayStylePagination } from '@apollo/client/utilities';
import { Client, fetchExchange, subscriptionExchange } from '@urql/core';
import { cacheExchange } from '@urql/exchange-graphcache';
import { relayPagination } from '@urql/exchange-graphcache/extras';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const url = process.argv[2];
const token = process.argv[3];
const wsUrl = url.replace(/^http/, 'ws') + '/ws';
const headers = token ? { authorization: `Bearer ${token}` } : {};
const connectionParams = token ? { Authorization: `Bearer ${token}` } : {};

function check(ok, what, detail) {
  if (!ok) {
    console.error(`FAIL ${what}${detail === undefined ? '' : `: ${JSON.stringify(detail)}`}`);
    process.exit(1);
  }
  console.log(`ok ${what}`);
}

const SESSIONS = gql`
  query Sessions($first: Int!, $after: String) {
    sessions(first: $first, after: $after) {
      edges {
        cursor
        node {
          id
          status
          pages(first: 2) {
            edges {
              cursor
              node {
                id
                url
                bugs(first: 2) {
                  edges { cursor node { id title priority } }
                  pageInfo { hasNextPage endCursor }
                }
              }
            }
            pageInfo { hasNextPage endCursor }
          }
        }
      }
      pageInfo { hasNextPage endCursor }
    }
  }
`;
const SESSION = gql`
  query Session($id: UUID!) {
    session(id: $id) { id status baseUrl totalCost }
  }
`;
const CREATE = gql`
  mutation Create($url: String!) {
    createSession(input: { baseUrl: $url }) { id status baseUrl totalCost }
  }
`;
const START = gql`
  mutation Start($id: UUID!) {
    startSession(id: $id) { id status }
  }
`;
const COST = gql`
  mutation Cost($id: UUID!, $amount: Decimal!) {
    addSessionCost(id: $id, amount: $amount) { id totalCost }
  }
`;
const PROGRESS = gql`
  subscription Progress($id: UUID!) {
    sessionProgress(sessionId: $id) { kind session { id status totalCost } }
  }
`;

/// Collects subscription messages until `done(messages)` holds, or fails after a timeout.
function collect(subscribe, done, what) {
  return new Promise((resolve, reject) => {
    const messages = [];
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`${what}: timed out after ${JSON.stringify(messages)}`));
    }, 10000);
    const stop = subscribe((m) => {
      messages.push(m);
      if (done(messages)) {
        clearTimeout(timer);
        stop();
        resolve(messages);
      }
    }, (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function apollo() {
  const wsClient = createClient({ url: wsUrl, webSocketImpl: WebSocket, connectionParams });
  const link = ApolloLink.split(
    ({ query }) => {
      const d = getMainDefinition(query);
      return d.kind === 'OperationDefinition' && d.operation === 'subscription';
    },
    new GraphQLWsLink(wsClient),
    new HttpLink({ uri: url, headers }),
  );
  const client = new ApolloClient({
    link,
    cache: new InMemoryCache({
      typePolicies: {
        Query: { fields: { sessions: relayStylePagination() } },
        CrawlSession: { fields: { pages: relayStylePagination(['status', 'maxDepth']) } },
        Page: { fields: { bugs: relayStylePagination(['filter']) } },
      },
    }),
  });

  // A nested read, then the next page through fetchMore, merged by relayStylePagination.
  const first = await client.query({ query: SESSIONS, variables: { first: 1 } });
  const page1 = first.data.sessions;
  check(page1.edges.length === 1 && page1.pageInfo.hasNextPage, 'apollo: nested query, first page', page1.pageInfo);
  const watch = client.watchQuery({ query: SESSIONS, variables: { first: 1 } });
  let latest;
  const sub = watch.subscribe({ next: (r) => { latest = r.data; } });
  await watch.fetchMore({ variables: { after: page1.pageInfo.endCursor } });
  const merged = client.readQuery({ query: SESSIONS, variables: { first: 1 } }).sessions;
  check(merged.edges.length === 2 && merged.edges[0].node.id === page1.edges[0].node.id,
    'apollo: fetchMore appends the next page', merged.edges.map((e) => e.node.id));
  check(merged.edges[0].node.id !== merged.edges[1].node.id, 'apollo: pages do not overlap');
  check(merged.edges.some((e) => e.node.pages.edges.some((p) => p.node.bugs.edges.length > 0)),
    'apollo: sessions > pages > bugs', merged.edges.map((e) => e.node));
  sub.unsubscribe();
  void latest;

  // A mutation's answer updates the normalized cache: the cached session changes status
  // without another request.
  const created = await client.mutate({ mutation: CREATE, variables: { url: 'https://apollo.example/' } });
  const id = created.data.createSession.id;
  const cached = await client.query({ query: SESSION, variables: { id } });
  check(cached.data.session.status === 'PENDING', 'apollo: new session is PENDING');
  await client.mutate({ mutation: START, variables: { id } });
  const after = client.readQuery({ query: SESSION, variables: { id } });
  check(after.session.status === 'RUNNING', 'apollo: the mutation updated the cached session', after);
  check(after.session.totalCost === '0.0000', 'apollo: Decimal keeps its scale', after.session.totalCost);

  // A subscription over graphql-ws: the snapshot, then the committed change.
  const observable = client.subscribe({ query: PROGRESS, variables: { id } });
  let costAdded = false;
  const messages = await collect((next, error) => {
    const s = observable.subscribe({
      next: (r) => {
        next(r.data.sessionProgress);
        if (!costAdded) {
          costAdded = true;
          client.mutate({ mutation: COST, variables: { id, amount: '0.2500' } }).catch(error);
        }
      },
      error,
    });
    return () => s.unsubscribe();
  }, (ms) => ms.some((m) => m.kind === 'cost'), 'apollo subscription');
  check(messages[0].kind === 'snapshot', 'apollo: subscription starts with a snapshot', messages[0]);
  check(messages.at(-1).session.totalCost === '0.2500', 'apollo: subscription sees the committed cost', messages.at(-1));
  const cachedCost = client.readQuery({ query: SESSION, variables: { id } }).session.totalCost;
  check(cachedCost === '0.2500', 'apollo: the subscription updated the cache too', cachedCost);
  await wsClient.dispose();
  return id;
}

async function urql(id) {
  const wsClient = createClient({ url: wsUrl, webSocketImpl: WebSocket, connectionParams });
  // Graphcache, urql's normalized cache: entities by `id`, everything else embedded.
  const embedded = () => null;
  const client = new Client({
    url,
    fetchOptions: { headers },
    exchanges: [
      cacheExchange({
        keys: {
          CrawlSessionConnection: embedded, CrawlSessionEdge: embedded,
          PageConnection: embedded, PageEdge: embedded,
          BugConnection: embedded, BugEdge: embedded,
          PageInfo: embedded, SessionProgress: embedded,
        },
        resolvers: { Query: { sessions: relayPagination() } },
      }),
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || '' };
          return {
            subscribe(sink) {
              const unsubscribe = wsClient.subscribe(input, sink);
              return { unsubscribe };
            },
          };
        },
      }),
    ],
  });
  const first = await client.query(SESSIONS, { first: 1 }).toPromise();
  check(!first.error && first.data.sessions.edges.length === 1, 'urql: nested query', first.error?.message);
  const next = await client
    .query(SESSIONS, { first: 1, after: first.data.sessions.pageInfo.endCursor })
    .toPromise();
  check(!next.error && next.data.sessions.edges.length === 2,
    'urql: the next page merges after the first (relayPagination)', next.data?.sessions.edges.length);
  check(next.data.sessions.edges[0].node.id !== next.data.sessions.edges[1].node.id, 'urql: pages do not overlap');
  // The newest session is the one Apollo created; the next one is seeded, with pages and bugs.
  const seeded = next.data.sessions.edges[1].node;
  check(seeded.pages.edges.length > 0 && seeded.pages.edges.some((e) => e.node.bugs.edges.length > 0),
    'urql: sessions > pages > bugs', seeded);

  // A mutation's answer updates the normalized cache: the cached session shows the new cost
  // without another request.
  const before = await client.query(SESSION, { id }).toPromise();
  check(!before.error && before.data.session.totalCost === '0.2500', 'urql: cached session', before.data);
  const cost = await client.mutation(COST, { id, amount: '1' }).toPromise();
  check(!cost.error && cost.data.addSessionCost.totalCost === '1.2500', 'urql: mutation', cost.error?.message ?? cost.data);
  const cached = await client.query(SESSION, { id }, { requestPolicy: 'cache-only' }).toPromise();
  check(cached.data?.session.totalCost === '1.2500', 'urql: the mutation updated the cached session', cached.data);

  const messages = await collect((nextMsg, error) => {
    const { unsubscribe } = client.subscription(PROGRESS, { id }).subscribe((r) => {
      if (r.error) error(r.error);
      else nextMsg(r.data.sessionProgress);
    });
    return unsubscribe;
  }, (ms) => ms.length >= 1, 'urql subscription');
  check(messages[0].kind === 'snapshot' && messages[0].session.totalCost === '1.2500',
    'urql: subscription snapshot', messages[0]);
  await wsClient.dispose();
}

async function graphqlWs(id) {
  const client = createClient({ url: wsUrl, webSocketImpl: WebSocket, connectionParams });
  // A query over the socket.
  const result = await new Promise((resolve, reject) => {
    let value;
    client.subscribe(
      { query: 'query ($id: UUID!) { session(id: $id) { id status } }', variables: { id } },
      { next: (v) => { value = v; }, error: reject, complete: () => resolve(value) },
    );
  });
  check(result.data.session.id === id, 'graphql-ws: query over the socket', result);
  // A validation error reaches the client as the protocol's error message.
  const err = await new Promise((resolve) => {
    client.subscribe(
      { query: 'subscription { noSuchField }' },
      { next: () => {}, error: resolve, complete: () => resolve(null) },
    );
  });
  check(Array.isArray(err) && err[0].message.includes('noSuchField'), 'graphql-ws: validation error', err);
  // A subscription: the snapshot, then a change.
  let changed = false;
  const messages = await collect((next, error) => client.subscribe(
    { query: PROGRESS.loc.source.body, variables: { id } },
    {
      next: (v) => {
        next(v.data.sessionProgress);
        if (!changed) {
          changed = true;
          fetch(url, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...headers },
            body: JSON.stringify({ query: 'mutation ($id: UUID!) { completeSession(id: $id) { id } }', variables: { id } }),
          }).catch(error);
        }
      },
      error,
      complete: () => {},
    },
  ), (ms) => ms.some((m) => m.kind === 'status'), 'graphql-ws subscription');
  check(messages.at(-1).session.status === 'COMPLETED', 'graphql-ws: subscription sees the committed status', messages.at(-1));
  await client.dispose();
}

const id = await apollo();
await urql(id);
await graphqlWs(id);
console.log('clients: apollo, urql and graphql-ws all passed');
process.exit(0);
