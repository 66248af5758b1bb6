//! Feeds untrusted bytes through everything a request passes before and during execution: the
//! body's JSON, the document scan, the parser, the shape and input checks, async-graphql's
//! validation, coercion of variables into the JSON scalars, the resolvers (against a database
//! that cannot be reached, so they fail fast) and the response writer.
//!
//! The first byte picks the input's role: 0 a whole POST body, 1 a document, else the
//! variables of a fixed operation whose arguments are the JSON scalars.
#![no_main]

use std::sync::OnceLock;

use bughive_gateway::auth::{Actor, Principal, Role};
use bughive_gateway::db::Db;
use bughive_gateway::graphql::{AppSchema, build_schema, execute};
use libfuzzer_sys::fuzz_target;

const JSON_SCALARS: &str = "mutation($c: JSON, $p: JSON, $e: JSON, $a: JSON, $r: JSON, $id: UUID!) {
  createSession(input: { baseUrl: \"https://a.test\", config: $c }) { id config }
  enqueueJob(input: { kind: \"k\", payload: $p }) { id payload }
  reportBugs(sessionId: $id, bugs: [{ title: \"t\", category: FUNCTIONAL, priority: LOW, confidence: 0.5, evidence: $e }]) { id }
  setPageStatus(id: $id, status: ANALYZED, analysisResult: $a) { id }
  completeJob(id: $id, result: $r) { id }
}";

struct World {
    rt: tokio::runtime::Runtime,
    schema: AppSchema,
    db: Db,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let db = rt.block_on(async {
            let pool = bughive_gateway::db::build_pool(&bughive_gateway::config::DbConfig {
                url: "host=/nonexistent-bughive-fuzz user=x dbname=x".into(),
                pool_size: 1,
                pool_timeout_ms: 10,
                statement_timeout_ms: 10,
            })
            .expect("pool builds lazily");
            Db::new(pool)
        });
        World {
            rt,
            schema: build_schema(),
            db,
        }
    })
}

fn request(data: &[u8]) -> Option<async_graphql::Request> {
    let (&mode, rest) = data.split_first()?;
    match mode {
        0 => match serde_json::from_slice::<async_graphql::BatchRequest>(rest).ok()? {
            async_graphql::BatchRequest::Single(r) => Some(r),
            async_graphql::BatchRequest::Batch(mut rs) => rs.pop(),
        },
        1 => Some(async_graphql::Request::new(std::str::from_utf8(rest).ok()?)),
        _ => {
            let vars: serde_json::Value = serde_json::from_slice(rest).ok()?;
            Some(
                async_graphql::Request::new(JSON_SCALARS)
                    .variables(async_graphql::Variables::from_json(vars)),
            )
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(req) = request(data) else { return };
    let w = world();
    let actor = Actor {
        principal: Principal {
            user_id: Default::default(),
            subject: "fuzz".into(),
            role: Role::Admin,
        },
        request_id: None,
    };
    let (resp, _) = w.rt.block_on(execute(&w.schema, &w.db, actor, req));
    let body = resp.to_json();
    // Whatever went in, what comes out is JSON with errors that carry a code.
    let v: serde_json::Value = serde_json::from_slice(&body).expect("the response is JSON");
    if let Some(errors) = v.get("errors").and_then(|e| e.as_array()) {
        for e in errors {
            assert!(e["extensions"]["code"].is_string(), "an error without a code: {e}");
        }
    }
});
