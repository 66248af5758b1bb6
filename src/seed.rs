//! Deterministic demo data: the same plan always yields the same rows (ids included), so
//! seeding twice is a no-op and tests can predict every row.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Duration, TimeZone, Utc};
use diesel_async::AsyncConnection;
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use crate::error::AppError;
use crate::store::Db;
use crate::store::agents::model::{AgentRow, ExecutionRow, ExecutionStatus};
use crate::store::bugs::model::{BugCategory, BugPriority, BugRow, BugStatus};
use crate::store::json::JsonText;
use crate::store::pages::model::{PageRow, PageStatus};
use crate::store::sessions::model::{SessionRow, SessionStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedPlan {
    pub sessions: usize,
    pub pages_per_session: usize,
    pub bugs_per_page: usize,
    /// When set, page `j` of session `i` gets a deterministic 0..=`bugs_per_page` bugs instead of
    /// exactly `bugs_per_page` (the load benchmark's 0–6 bugs per page).
    pub vary_bugs: bool,
}

impl SeedPlan {
    /// How many bugs page `j` of session `i` gets.
    pub fn bugs_on(&self, i: usize, j: usize) -> usize {
        if self.vary_bugs {
            (i * 7 + j * 13 + 3) % (self.bugs_per_page + 1)
        } else {
            self.bugs_per_page
        }
    }
}

const NS: Uuid = Uuid::from_u128(0x6275_6768_6976_6500_0000_0000_0000_0001);

fn id(kind: &str, parts: &[usize]) -> Uuid {
    let mut name = String::from(kind);
    for p in parts {
        name.push('/');
        name.push_str(&p.to_string());
    }
    Uuid::new_v5(&NS, name.as_bytes())
}

fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// The rows of a plan. Session `i` is `i` hours after 2026-01-01, so higher indexes are newer.
pub fn generate(plan: SeedPlan) -> (Vec<SessionRow>, Vec<PageRow>, Vec<BugRow>) {
    let mut sessions = Vec::with_capacity(plan.sessions);
    let mut pages = Vec::with_capacity(plan.sessions * plan.pages_per_session);
    let mut bugs = Vec::with_capacity(plan.sessions * plan.pages_per_session * plan.bugs_per_page);
    for i in 0..plan.sessions {
        let sid = id("session", &[i]);
        let created = epoch() + Duration::hours(i as i64);
        let base_url = format!("https://site-{}.example.test", i % 10);
        let status = [
            SessionStatus::Completed,
            SessionStatus::Running,
            SessionStatus::Completed,
            SessionStatus::Failed,
            SessionStatus::Pending,
            SessionStatus::Cancelled,
        ][i % 6];
        let mut depths: Vec<i32> = Vec::with_capacity(plan.pages_per_session);
        let mut crawled = 0;
        let mut found = 0;
        for j in 0..plan.pages_per_session {
            let (parent, depth) = if j == 0 {
                (None, 0)
            } else {
                let p = (j - 1) / 3;
                (Some(p), depths[p] + 1)
            };
            depths.push(depth);
            let page_status = match status {
                SessionStatus::Pending => PageStatus::Discovered,
                _ => [
                    PageStatus::Analyzed,
                    PageStatus::Analyzed,
                    PageStatus::Analyzed,
                    PageStatus::Discovered,
                    PageStatus::Failed,
                    PageStatus::Skipped,
                    PageStatus::Crawling,
                ][j % 7],
            };
            let done = matches!(page_status, PageStatus::Analyzed | PageStatus::Failed);
            crawled += i32::from(done);
            let pid = id("page", &[i, j]);
            let page_created = created + Duration::seconds(j as i64);
            let url = if j == 0 {
                format!("{base_url}/")
            } else {
                format!("{base_url}/section-{}/page-{j}", depth)
            };
            pages.push(PageRow {
                id: pid,
                session_id: sid,
                url: url.clone(),
                title: Some(format!("Page {j} of {base_url}")),
                status: page_status,
                depth,
                parent_page_id: parent.map(|p| id("page", &[i, p])),
                analysis_result: done.then(|| {
                    JsonText::from(serde_json::json!({ "links": (j * 7) % 23, "loadMs": 120 + (j * 37) % 900 }))
                }),
                crawled_at: done.then(|| page_created + Duration::seconds(30)),
                created_at: page_created,
                updated_at: page_created,
            });
            found += plan.bugs_on(i, j);
            for k in 0..plan.bugs_on(i, j) {
                let bug_created = page_created + Duration::milliseconds(k as i64 + 1);
                bugs.push(BugRow {
                    id: id("bug", &[i, j, k]),
                    session_id: sid,
                    page_id: Some(pid),
                    title: format!("{} issue #{k} on page {j}", BugCategory::ALL[(i + j + k) % 8].as_db()),
                    description: format!("Detected while crawling {url}."),
                    category: BugCategory::ALL[(i + j + k) % 8],
                    priority: BugPriority::ALL[(i * 7 + j * 3 + k) % 4],
                    status: BugStatus::ALL[(j + k) % 4],
                    steps_to_reproduce: JsonText::from(serde_json::json!([format!("Open {url}"), "Scroll to the footer", "Observe the layout"])),
                    evidence: JsonText::from(serde_json::json!([{ "type": "screenshot", "url": format!("https://evidence.example.test/{i}/{j}/{k}.png") }])),
                    confidence: 0.5 + ((i * 31 + j * 17 + k * 7) % 50) as f64 / 100.0,
                    expected_behavior: Some("The page renders without errors".into()),
                    actual_behavior: Some("Something is off".into()),
                    affected_users: (k % 2 == 0).then(|| "all visitors".into()),
                    linear_issue_id: ((j + k) % 4 == 2).then(|| format!("QA-{}", i * 1000 + j * 10 + k)),
                    dismiss_reason: ((j + k) % 4 == 3).then(|| "duplicate".into()),
                    created_at: bug_created,
                    updated_at: bug_created,
                });
            }
        }
        let started = (status != SessionStatus::Pending).then(|| created + Duration::minutes(1));
        let finished = matches!(
            status,
            SessionStatus::Completed | SessionStatus::Failed | SessionStatus::Cancelled
        )
        .then(|| created + Duration::minutes(30));
        sessions.push(SessionRow {
            id: sid,
            base_url,
            status,
            config: JsonText::from(
                serde_json::json!({ "maxPages": plan.pages_per_session, "maxDepth": 5 }),
            ),
            pages_discovered: plan.pages_per_session as i32,
            pages_crawled: crawled,
            bugs_found: found as i32,
            total_cost: BigDecimal::from((i % 17) as i64 * 125) / BigDecimal::from(10_000),
            error_message: (status == SessionStatus::Failed).then(|| "browser crashed".into()),
            created_at: created,
            updated_at: created,
            started_at: started,
            completed_at: finished,
            owner_id: None,
            project_id: None,
        });
    }
    (sessions, pages, bugs)
}

/// The agents of every plan, and each started session's executions: two per session, whose
/// costs add up to the session's `total_cost` (as `finishExecution` keeps them).
pub fn generate_agents(
    sessions: &[SessionRow],
    pages: &[PageRow],
) -> (Vec<AgentRow>, Vec<ExecutionRow>) {
    let specs = [
        (
            "crawler-gpt",
            "crawler",
            "openai",
            "gpt-4o",
            &["crawl", "forms"][..],
        ),
        (
            "visual-checker",
            "validator",
            "anthropic",
            "claude-sonnet",
            &["vision", "layout"][..],
        ),
        (
            "a11y-auditor",
            "auditor",
            "local",
            "axe-llm-7b",
            &["accessibility"][..],
        ),
    ];
    let agents: Vec<AgentRow> = specs
        .iter()
        .enumerate()
        .map(|(n, (name, kind, provider, model, caps))| AgentRow {
            id: id("agent", &[n]),
            name: (*name).into(),
            agent_type: (*kind).into(),
            model_provider: Some((*provider).into()),
            model_name: Some((*model).into()),
            capabilities: JsonText::from(serde_json::json!({ "skills": caps })),
            is_active: true,
            is_experimental: n == 2,
            tags: vec![Some("seed".into()), Some((*kind).to_string())],
            created_at: epoch() - Duration::days(1) + Duration::minutes(n as i64),
            updated_at: epoch() - Duration::days(1) + Duration::minutes(n as i64),
        })
        .collect();
    let mut first_page: std::collections::HashMap<Uuid, Uuid> = std::collections::HashMap::new();
    for p in pages {
        first_page.entry(p.session_id).or_insert(p.id);
    }
    let mut executions = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let Some(started) = s.started_at else {
            continue;
        };
        let second = match s.status {
            SessionStatus::Running => ExecutionStatus::Running,
            SessionStatus::Failed => ExecutionStatus::Failure,
            SessionStatus::Cancelled => ExecutionStatus::Timeout,
            _ => ExecutionStatus::Success,
        };
        // The finished executions split the session's cost exactly; a running one has none yet.
        let costs = if second == ExecutionStatus::Running {
            [s.total_cost.clone(), BigDecimal::from(0)]
        } else {
            let half = (&s.total_cost / BigDecimal::from(2))
                .with_scale_round(4, bigdecimal::RoundingMode::Down);
            [half.clone(), &s.total_cost - &half]
        };
        for (k, cost) in costs.into_iter().enumerate() {
            let status = if k == 0 {
                ExecutionStatus::Success
            } else {
                second
            };
            let running = status == ExecutionStatus::Running;
            let begun = started + Duration::seconds(10 + 60 * k as i64);
            let duration = 4_000 + ((i * 37 + k * 11) % 50) as i64 * 100;
            let tokens = 1_000 + ((i * 53 + k * 29) % 40) as i64 * 250;
            executions.push(ExecutionRow {
                id: id("execution", &[i, k]),
                agent_id: agents[(i + k) % agents.len()].id,
                session_id: s.id,
                page_id: first_page.get(&s.id).copied(),
                bug_id: None,
                status,
                input: JsonText::from(serde_json::json!({})),
                input_tokens: if running { 0 } else { tokens },
                output_tokens: if running { 0 } else { tokens / 4 },
                cost,
                timeout_seconds: 600,
                // Long past: the first reaper tick of a demo times it out, as it would.
                deadline_at: running.then(|| begun + Duration::seconds(600)),
                duration_ms: (!running).then_some(duration),
                result: (status == ExecutionStatus::Success)
                    .then(|| JsonText::from(serde_json::json!({ "checked": 10 + k }))),
                error: match status {
                    ExecutionStatus::Failure => Some("model returned no answer".into()),
                    ExecutionStatus::Timeout => Some("no result within 600 s".into()),
                    _ => None,
                },
                created_at: begun,
                updated_at: begun,
                started_at: Some(begun),
                finished_at: (!running).then(|| begun + Duration::milliseconds(duration)),
            });
        }
    }
    (agents, executions)
}

/// Writes a plan in one transaction with bulk inserts; returns the number of rows inserted.
pub async fn run(db: &Db, plan: SeedPlan, progress: bool) -> anyhow::Result<usize> {
    let (sessions, pages, bugs) = generate(plan);
    let (agents, executions) = generate_agents(&sessions, &pages);
    let total = (sessions.len() + pages.len() + bugs.len() + executions.len()) as u64;
    let bar = if progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rows {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut conn = db.conn().await?;
    let bar2 = bar.clone();
    let inserted = conn
        .transaction::<usize, AppError, _>(async move |c| {
            let mut n = 0;
            bar2.set_message("sessions");
            for chunk in sessions.chunks(2_000) {
                n += crate::store::sessions::repo::insert_many(c, chunk).await?;
                bar2.inc(chunk.len() as u64);
            }
            bar2.set_message("pages");
            for chunk in pages.chunks(4_000) {
                n += crate::store::pages::repo::insert_many(c, chunk).await?;
                bar2.inc(chunk.len() as u64);
            }
            bar2.set_message("bugs");
            for chunk in bugs.chunks(3_000) {
                n += crate::store::bugs::repo::insert_many(c, chunk).await?;
                bar2.inc(chunk.len() as u64);
            }
            bar2.set_message("agents");
            n += crate::store::agents::repo::insert_agents(c, &agents).await?;
            for chunk in executions.chunks(3_000) {
                n += crate::store::agents::repo::insert_executions(c, chunk).await?;
                bar2.inc(chunk.len() as u64);
            }
            bar2.set_message("evidence");
            n += crate::store::evidence::repo::seed(c).await?;
            n += crate::store::comments::repo::seed(c).await?;
            Ok(n)
        })
        .await?;
    bar.finish_with_message("done");
    Ok(inserted)
}
