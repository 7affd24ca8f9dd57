//! `bench control-plane`: the real control plane (TLS, SQL store, local KMS) in its own process
//! so the runner can pin it, with a tenant, a sidecar identity, one secret bound to the
//! upstream's two addresses and `--real-tokens` scoped tokens issued through the API.
//!
//! It prints one JSON line (`Stack`) and then obeys stdin: `seed TOKENS SECRETS` grows the
//! tokens and secrets tables to those totals with filler rows (answering `seeded ...`), EOF
//! ends the process. Filler rows copy a real row with a fresh id (and, for tokens, a random
//! key hash no credential matches; for secrets, a new path): they give the indexes the size
//! under test, while the load uses the real tokens.

use std::net::SocketAddr;
use std::path::PathBuf;

use agent_secret_control_plane::service::Policy;
use agent_secret_testkit::control_plane::{ControlPlane, Install, Tenant};
use serde_json::{json, Value};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

pub const SECRET_PATH: &str = "bench/api_key";
const SECRET_VALUE: &str = "sk-bench-7Qm2xV9pL4rT8wZ1cN6bH3jK5dF0gS";

pub struct Args {
    pub dir: PathBuf,
    pub db_url: Option<String>,
    pub hosts: Vec<String>,
    pub real_tokens: usize,
}

pub fn run(args: Args) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The control plane keeps serving on the runtime's workers while this thread waits on
    // stdin (tokio here has no `io-std`).
    let (db_url, template_token) = rt.block_on(serve(args));
    for line in std::io::stdin().lines() {
        let Ok(line) = line else { break };
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let ["seed", t, s] = parts.as_slice() {
            let (t, s): (i64, i64) = (t.parse().expect("tokens"), s.parse().expect("secrets"));
            match rt.block_on(seed(&db_url, &template_token, t, s)) {
                Ok(v) => println!("seeded {v}"),
                Err(e) => println!("seed failed: {e}"),
            }
        }
    }
}

/// Starts and populates the control plane; returns its database URL and a template token id.
async fn serve(args: Args) -> (String, String) {
    std::fs::create_dir_all(&args.dir).expect("dir");
    let install = Install::new(&args.dir, args.db_url.clone()).await;
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    // `BENCH_SIDECAR_AUTH_CACHE_SECONDS=0` measures resolve with every sidecar key checked in
    // the database (the behaviour before `service::verified_sidecars`).
    let mut policy = Policy::default();
    if let Some(seconds) = std::env::var("BENCH_SIDECAR_AUTH_CACHE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        policy.sidecar_auth_cache = std::time::Duration::from_secs(seconds);
    }
    let cp = ControlPlane::serve(&install, addr, policy).await;
    let tenant = Tenant::create(&cp, "bench").await;
    let hosts: Vec<&str> = args.hosts.iter().map(String::as_str).collect();
    tenant
        .put_secret(&cp, SECRET_PATH, SECRET_VALUE, &hosts)
        .await;
    let mut tokens = Vec::with_capacity(args.real_tokens);
    let mut template_token = String::new();
    for _ in 0..args.real_tokens.max(1) {
        let (id, token) = tenant
            .token(
                &cp,
                &["secrets:read:bench/*"],
                json!({"ttl_seconds": 86_400}),
            )
            .await;
        template_token = id;
        tokens.push(token);
    }
    let stack = json!({
        "url": cp.url,
        "ca_file": cp.ca_file,
        "keyring": install.keyring,
        "master_key_file": install.master_key_file,
        "sidecar_key": tenant.sidecar_key,
        "secret_path": SECRET_PATH,
        "tokens": tokens,
    });
    println!("{stack}");
    // The server task lives on the runtime; leak the handle so dropping it cannot stop it.
    std::mem::forget(cp);
    (install.db_url.clone(), template_token)
}

/// Grows `tokens` and `secrets` (with their versions) to the given totals.
async fn seed(
    db_url: &str,
    template_token: &str,
    tokens: i64,
    secrets: i64,
) -> Result<Value, sqlx::Error> {
    let pg = db_url.starts_with("postgres");
    let mut conn = Conn::connect(db_url).await?;
    let count = |table: &str| format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {table}");
    let have_tokens = conn.i64(&count("tokens")).await?;
    let have_secrets = conn.i64(&count("secrets")).await?;
    let template_secret = conn
        .strings(&format!(
            "SELECT id FROM secrets WHERE path = '{SECRET_PATH}'"
        ))
        .await?
        .remove(0);
    let hex12 = |prefix: &str| {
        if pg {
            format!("'{prefix}' || lpad(to_hex(n.i), 12, '0')")
        } else {
            format!("'{prefix}' || printf('%012x', n.i)")
        }
    };
    let token_id = hex12("00000000-0000-4000-8000-");
    let secret_id = hex12("00000000-0000-4000-9000-");
    let random_hash = if pg {
        "decode(md5(n.i::text), 'hex') || decode(md5('h' || n.i::text), 'hex')".to_owned()
    } else {
        "randomblob(32)".to_owned()
    };
    let path = "'bench/filler/' || n.i".to_owned();
    if tokens > have_tokens {
        let sql = fill_sql(
            &mut conn,
            pg,
            "tokens",
            &[("id", &token_id), ("key_hash", &random_hash)],
            "id",
            template_token,
            have_tokens,
            tokens,
        )
        .await?;
        conn.exec(&sql).await?;
    }
    if secrets > have_secrets {
        let sql = fill_sql(
            &mut conn,
            pg,
            "secrets",
            &[("id", &secret_id), ("path", &path)],
            "id",
            &template_secret,
            have_secrets,
            secrets,
        )
        .await?;
        conn.exec(&sql).await?;
        let sql = fill_sql(
            &mut conn,
            pg,
            "secret_versions",
            &[("secret_id", &secret_id)],
            "secret_id",
            &template_secret,
            have_secrets,
            secrets,
        )
        .await?;
        conn.exec(&sql).await?;
    }
    if pg {
        conn.exec("ANALYZE").await?;
    }
    let have_tokens = conn.i64(&count("tokens")).await?;
    let have_secrets = conn.i64(&count("secrets")).await?;
    Ok(json!({"tokens": have_tokens, "secrets": have_secrets}))
}

/// `INSERT INTO table SELECT` copying the template row once per `n.i` in `(from, to]`, with
/// `overrides` replacing some columns.
#[allow(clippy::too_many_arguments)]
async fn fill_sql(
    conn: &mut Conn,
    pg: bool,
    table: &str,
    overrides: &[(&str, &String)],
    key: &str,
    template: &str,
    from: i64,
    to: i64,
) -> Result<String, sqlx::Error> {
    let columns_sql = if pg {
        format!("SELECT CAST(column_name AS TEXT) FROM information_schema.columns WHERE table_name = '{table}' AND table_schema = current_schema() ORDER BY ordinal_position")
    } else {
        format!("SELECT name FROM pragma_table_info('{table}')")
    };
    let columns = conn.strings(&columns_sql).await?;
    let exprs: Vec<String> = columns
        .iter()
        .map(|c| {
            overrides
                .iter()
                .find(|(name, _)| name == c)
                .map(|(_, e)| (*e).clone())
                .unwrap_or_else(|| format!("t.{c}"))
        })
        .collect();
    let (first, last) = (from + 1, to);
    let series = if pg {
        format!("generate_series({first}::bigint, {last}::bigint) AS n(i)")
    } else {
        "n".to_owned()
    };
    let cte = if pg {
        String::new()
    } else {
        format!("WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {last}) ")
    };
    Ok(format!(
        "{cte}INSERT INTO {table} ({}) SELECT {} FROM {table} AS t, {series} WHERE t.{key} = '{template}'",
        columns.join(", "),
        exprs.join(", ")
    ))
}

/// One connection to either backend (the workspace's sqlx has no `any` driver).
enum Conn {
    Pg(PgConnection),
    Lite(SqliteConnection),
}

impl Conn {
    async fn connect(url: &str) -> Result<Conn, sqlx::Error> {
        Ok(if url.starts_with("postgres") {
            Conn::Pg(PgConnection::connect(url).await?)
        } else {
            Conn::Lite(SqliteConnection::connect(url).await?)
        })
    }

    async fn exec(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            Conn::Pg(c) => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                .execute(c)
                .await
                .map(drop),
            Conn::Lite(c) => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                .execute(c)
                .await
                .map(drop),
        }
    }

    async fn i64(&mut self, sql: &str) -> Result<i64, sqlx::Error> {
        match self {
            Conn::Pg(c) => sqlx::query(AssertSqlSafe(sql.to_owned()))
                .fetch_one(c)
                .await?
                .try_get(0),
            Conn::Lite(c) => sqlx::query(AssertSqlSafe(sql.to_owned()))
                .fetch_one(c)
                .await?
                .try_get(0),
        }
    }

    async fn strings(&mut self, sql: &str) -> Result<Vec<String>, sqlx::Error> {
        match self {
            Conn::Pg(c) => sqlx::query(AssertSqlSafe(sql.to_owned()))
                .fetch_all(c)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect(),
            Conn::Lite(c) => sqlx::query(AssertSqlSafe(sql.to_owned()))
                .fetch_all(c)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect(),
        }
    }
}
