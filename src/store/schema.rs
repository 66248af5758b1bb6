// @generated automatically by Diesel CLI.

pub mod sql_types {
    #[derive(diesel::query_builder::QueryId, Clone, diesel::sql_types::SqlType)]
    #[diesel(postgres_type(name = "tsvector", schema = "pg_catalog"))]
    pub struct Tsvector;
}

diesel::table! {
    agent_executions (id) {
        id -> Uuid,
        agent_id -> Uuid,
        session_id -> Uuid,
        page_id -> Nullable<Uuid>,
        bug_id -> Nullable<Uuid>,
        status -> Text,
        input -> Jsonb,
        input_tokens -> Int8,
        output_tokens -> Int8,
        cost -> Numeric,
        timeout_seconds -> Int4,
        deadline_at -> Nullable<Timestamptz>,
        duration_ms -> Nullable<Int8>,
        result -> Nullable<Jsonb>,
        error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    agents (id) {
        id -> Uuid,
        name -> Text,
        agent_type -> Text,
        model_provider -> Nullable<Text>,
        model_name -> Nullable<Text>,
        capabilities -> Jsonb,
        is_active -> Bool,
        is_experimental -> Bool,
        tags -> Array<Nullable<Text>>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    audit_logs (id) {
        id -> Uuid,
        actor_id -> Nullable<Uuid>,
        actor_subject -> Text,
        actor_role -> Text,
        action -> Text,
        resource_type -> Text,
        resource_id -> Nullable<Uuid>,
        old_value -> Nullable<Jsonb>,
        new_value -> Nullable<Jsonb>,
        request_id -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    bug_comments (id) {
        id -> Uuid,
        bug_id -> Uuid,
        session_id -> Uuid,
        author_id -> Nullable<Uuid>,
        agent_id -> Nullable<Uuid>,
        body -> Text,
        is_ai_generated -> Bool,
        ai_metadata -> Jsonb,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        edited_at -> Nullable<Timestamptz>,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::Tsvector;

    bugs (id) {
        id -> Uuid,
        session_id -> Uuid,
        page_id -> Nullable<Uuid>,
        title -> Text,
        description -> Text,
        category -> Text,
        priority -> Text,
        status -> Text,
        steps_to_reproduce -> Jsonb,
        evidence -> Jsonb,
        confidence -> Float8,
        expected_behavior -> Nullable<Text>,
        actual_behavior -> Nullable<Text>,
        affected_users -> Nullable<Text>,
        linear_issue_id -> Nullable<Text>,
        dismiss_reason -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        search -> Nullable<Tsvector>,
    }
}

diesel::table! {
    crawl_sessions (id) {
        id -> Uuid,
        base_url -> Text,
        status -> Text,
        config -> Jsonb,
        pages_discovered -> Int4,
        pages_crawled -> Int4,
        bugs_found -> Int4,
        total_cost -> Numeric,
        error_message -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        completed_at -> Nullable<Timestamptz>,
        owner_id -> Nullable<Uuid>,
        project_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    event_log_pruned (only_row) {
        only_row -> Bool,
        txid -> Int8,
        id -> Int8,
    }
}

diesel::table! {
    events (txid, id) {
        id -> Int8,
        txid -> Int8,
        session_id -> Nullable<Uuid>,
        project_id -> Nullable<Uuid>,
        entity -> Text,
        entity_id -> Nullable<Uuid>,
        kind -> Text,
        payload -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    evidence (id) {
        id -> Uuid,
        bug_id -> Uuid,
        session_id -> Uuid,
        execution_id -> Nullable<Uuid>,
        source_type -> Text,
        summary -> Text,
        data -> Jsonb,
        credibility -> Float8,
        is_verified -> Bool,
        verified_by -> Nullable<Uuid>,
        verified_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    evidence_links (evidence_id, kind, other_id) {
        evidence_id -> Uuid,
        other_id -> Uuid,
        kind -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    jobs (id) {
        id -> Uuid,
        kind -> Text,
        status -> Text,
        session_id -> Nullable<Uuid>,
        payload -> Jsonb,
        progress -> Float8,
        message -> Nullable<Text>,
        attempts -> Int4,
        max_attempts -> Int4,
        run_after -> Timestamptz,
        lease_seconds -> Int4,
        lease_expires_at -> Nullable<Timestamptz>,
        claimed_by -> Nullable<Text>,
        result -> Nullable<Jsonb>,
        error -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    pages (id) {
        id -> Uuid,
        session_id -> Uuid,
        url -> Text,
        title -> Nullable<Text>,
        status -> Text,
        depth -> Int4,
        parent_page_id -> Nullable<Uuid>,
        analysis_result -> Nullable<Jsonb>,
        crawled_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    persisted_queries (hash) {
        hash -> Text,
        document -> Text,
        created_at -> Timestamptz,
        last_used_at -> Timestamptz,
    }
}

diesel::table! {
    projects (id) {
        id -> Uuid,
        slug -> Text,
        name -> Text,
        owner_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    session_credentials (session_id) {
        session_id -> Uuid,
        key_id -> Text,
        nonce -> Bytea,
        ciphertext -> Bytea,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    trend_refreshes (view_name) {
        view_name -> Text,
        refreshed_at -> Timestamptz,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        subject -> Text,
        email -> Nullable<Text>,
        display_name -> Nullable<Text>,
        role -> Text,
        is_active -> Bool,
        created_at -> Timestamptz,
        last_seen_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(agent_executions -> agents (agent_id));
diesel::joinable!(agent_executions -> bugs (bug_id));
diesel::joinable!(agent_executions -> crawl_sessions (session_id));
diesel::joinable!(agent_executions -> pages (page_id));
diesel::joinable!(bug_comments -> agents (agent_id));
diesel::joinable!(bug_comments -> bugs (bug_id));
diesel::joinable!(bug_comments -> crawl_sessions (session_id));
diesel::joinable!(bug_comments -> users (author_id));
diesel::joinable!(bugs -> crawl_sessions (session_id));
diesel::joinable!(bugs -> pages (page_id));
diesel::joinable!(crawl_sessions -> projects (project_id));
diesel::joinable!(crawl_sessions -> users (owner_id));
diesel::joinable!(evidence -> agent_executions (execution_id));
diesel::joinable!(evidence -> bugs (bug_id));
diesel::joinable!(evidence -> crawl_sessions (session_id));
diesel::joinable!(evidence -> users (verified_by));
diesel::joinable!(jobs -> crawl_sessions (session_id));
diesel::joinable!(pages -> crawl_sessions (session_id));
diesel::joinable!(projects -> users (owner_id));
diesel::joinable!(session_credentials -> crawl_sessions (session_id));

diesel::allow_tables_to_appear_in_same_query!(
    agent_executions,
    agents,
    audit_logs,
    bug_comments,
    bugs,
    crawl_sessions,
    event_log_pruned,
    events,
    evidence,
    evidence_links,
    jobs,
    pages,
    persisted_queries,
    projects,
    session_credentials,
    trend_refreshes,
    users,
);
