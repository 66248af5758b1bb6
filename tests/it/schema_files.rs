//! `schema.graphql` is the exported SDL; it must not drift from the code.

#[test]
fn schema_graphql_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let current = bughive_gateway::api::sdl();
    assert!(
        committed == current,
        "schema.graphql is out of date: regenerate it with `cargo run -- schema > schema.graphql`"
    );
}

#[test]
fn schema_keeps_the_public_contract() {
    let sdl = bughive_gateway::api::sdl();
    for needle in [
        "session(id: UUID!): CrawlSession",
        "sessions(first: Int = 20, after: String, status: SessionStatus, baseUrl: String): CrawlSessionConnection!",
        "page(id: UUID!): Page",
        "bug(id: UUID!): Bug",
        "pages(first: Int = 50, after: String, status: PageStatus, maxDepth: Int): PageConnection!",
        "bugs(first: Int = 50, after: String, filter: BugFilter): BugConnection!",
        "children(first: Int = 50, after: String): PageConnection!",
        "statistics: SessionStatistics!",
        "totalCost: Decimal!",
        "scalar Decimal",
        "scalar JSON",
        "scalar UUID",
        "scalar DateTime",
        "totalCount: Int!",
        "stepsToReproduce: [String!]!",
    ] {
        assert!(sdl.contains(needle), "SDL lacks `{needle}`");
    }
}
