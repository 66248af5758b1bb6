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
  <style>body { margin: 0; overflow: hidden; } #graphiql { height: 100vh; }</style>
  <link rel="stylesheet" href="/graphiql/graphiql.min.css">
  <script src="/graphiql/react.production.min.js"></script>
  <script src="/graphiql/react-dom.production.min.js"></script>
  <script src="/graphiql/graphiql.min.js"></script>
</head>
<body>
  <div id="graphiql">Loading…</div>
  <script>
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
    ReactDOM.createRoot(document.getElementById('graphiql')).render(
      React.createElement(GraphiQL, {
        fetcher: GraphiQL.createFetcher({ url: http.toString(), subscriptionUrl: ws.toString() }),
        defaultQuery,
        defaultEditorToolsVisibility: true,
      })
    );
  </script>
</body>
</html>
"#;

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
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
