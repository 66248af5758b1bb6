//! The GraphiQL playground, served entirely from the binary so it works without internet access.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// Vendored, unmodified distribution files (see `assets/graphiql/README.md`).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
    ),
];

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="robots" content="noindex">
  <title>bughive-gateway · GraphiQL</title>
  <style>
    body { margin: 0; overflow: hidden; font-family: system-ui, sans-serif; }
    #app { display: flex; flex-direction: column; height: 100vh; }
    #graphiql { flex: 1; min-height: 0; }
    #auth { display: none; gap: 8px; align-items: center; padding: 6px 12px; font-size: 13px;
            border-bottom: 1px solid #ddd; background: #f7f7f7; }
    #auth input { flex: 1; font-family: monospace; padding: 3px 6px; }
    .bughive-sql { font-family: monospace; font-size: 12px; }
    .bughive-sql li { margin-bottom: 8px; white-space: pre-wrap; word-break: break-word; }
  </style>
  <link rel="stylesheet" href="/graphiql/graphiql.min.css">
  <script src="/graphiql/react.production.min.js"></script>
  <script src="/graphiql/react-dom.production.min.js"></script>
  <script src="/graphiql/graphiql.min.js"></script>
</head>
<body>
  <div id="app">
    <div id="auth">
      <label for="token">Bearer token</label>
      <input id="token" type="password" autocomplete="off"
             placeholder="paste a token (bughive-gateway token SUBJECT); kept in this browser">
      <button id="forget" type="button">Forget</button>
    </div>
    <div id="graphiql">Loading…</div>
  </div>
  <script>
    // Set by the gateway: whether requests need a token.
    const AUTH_REQUIRED = __AUTH_REQUIRED__;
    const TOKEN_KEY = 'bughive:token';
    const http = new URL('/graphql', window.location.href);
    const ws = new URL('/graphql/ws', window.location.href);
    ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
    const defaultQuery = `# Welcome to bughive-gateway. Try:
{
  sessions(first: 5) {
    totalCount
    nodes {
      id baseUrl status totalCost
      statistics { totalBugs byPriority { priority count } }
      pages(first: 3) { nodes { url bugs(first: 2) { nodes { title priority confidence } } } }
    }
  }
}
`;
    const token = () => localStorage.getItem(TOKEN_KEY) || '';
    const tokenInput = document.getElementById('token');
    if (AUTH_REQUIRED) {
      document.getElementById('auth').style.display = 'flex';
      tokenInput.value = token();
      tokenInput.addEventListener('change', () => {
        localStorage.setItem(TOKEN_KEY, tokenInput.value.trim().replace(/^Bearer\s+/i, ''));
        render();
      });
      document.getElementById('forget').addEventListener('click', () => {
        localStorage.removeItem(TOKEN_KEY);
        tokenInput.value = '';
        render();
      });
    }

    // The SQL panel: what the last request ran, when the gateway sends it (`extensions.sql`).
    let lastSql = null;
    const listeners = new Set();
    function SqlPanel() {
      const [sql, setSql] = React.useState(lastSql);
      React.useEffect(() => {
        listeners.add(setSql);
        return () => listeners.delete(setSql);
      }, []);
      if (!sql) {
        return React.createElement('p', null,
          'Run an operation: the statements it ran appear here (development mode, or an admin token).');
      }
      return React.createElement('div', { className: 'bughive-sql' },
        React.createElement('p', null, `${sql.length} statement(s)`),
        React.createElement('ol', null, sql.map((s, i) =>
          React.createElement('li', { key: i }, `${s.ms.toFixed(2)} ms  ${s.statement}`))));
    }
    const sqlPlugin = {
      title: 'SQL',
      icon: () => React.createElement('span', { style: { fontWeight: 600, fontSize: 11 } }, 'SQL'),
      content: SqlPanel,
    };
    function showSql(result) {
      const sql = result && result.extensions && result.extensions.sql;
      if (Array.isArray(sql)) {
        lastSql = sql;
        listeners.forEach((f) => f(sql));
      }
    }

    const root = ReactDOM.createRoot(document.getElementById('graphiql'));
    function render() {
      const t = token();
      const auth = t ? { Authorization: `Bearer ${t}` } : {};
      const base = GraphiQL.createFetcher({
        url: http.toString(),
        subscriptionUrl: ws.toString(),
        headers: { 'x-bughive-sql': '1', ...auth },
        // No @defer/@stream here: plain JSON answers, which the SQL panel reads.
        enableIncrementalDelivery: false,
        wsConnectionParams: auth,
      });
      // Headers typed in the Headers pane win over the token field.
      const fetcher = (params, opts) => {
        const out = base(params, opts);
        if (out && typeof out.then === 'function') {
          return out.then((r) => { showSql(r); return r; });
        }
        return out;
      };
      root.render(React.createElement(GraphiQL, {
        key: t,
        fetcher,
        defaultQuery,
        defaultEditorToolsVisibility: true,
        shouldPersistHeaders: true,
        plugins: [sqlPlugin],
      }));
    }
    render();
  </script>
</body>
</html>
"#;

/// The playground; `auth_required` shows the token field.
pub fn page(auth_required: bool) -> Html<String> {
    Html(PAGE.replace(
        "__AUTH_REQUIRED__",
        if auth_required { "true" } else { "false" },
    ))
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
