//! TLS to PostgreSQL against a real server with `ssl=on` and a certificate made here (a CA and a
//! server certificate for `localhost`): each `sslmode` connects or fails for its own reason, and
//! the gateway's CLI and server run over TLS with the pool and the change listener alike.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bughive_gateway::store::embedded::{EmbeddedOptions, EmbeddedPg};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

struct Certs {
    ca: String,
    other_ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn certs() -> Certs {
    let ca_params = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p
    };
    let ca = CertifiedIssuer::self_signed(
        ca_params("bughive test CA"),
        KeyPair::generate().expect("key"),
    )
    .expect("ca");
    let other = CertifiedIssuer::self_signed(
        ca_params("someone else's CA"),
        KeyPair::generate().expect("key"),
    )
    .expect("other ca");
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("server cert");
    // A client certificate for the database user, for `cert` authentication.
    let client_key = KeyPair::generate().expect("client key");
    let mut client = CertificateParams::new(Vec::<String>::new()).expect("params");
    client
        .distinguished_name
        .push(DnType::CommonName, "bughive");
    let client = client.signed_by(&client_key, &ca).expect("client cert");
    Certs {
        ca: ca.pem(),
        other_ca: other.pem(),
        server_cert: server.pem(),
        server_key: key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// Writes a file PostgreSQL reads as its own: owned by the server's user, not readable by others.
fn server_file(path: &Path, text: &str, owner: Option<(u32, u32)>) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

async fn connects(url: &str) -> Result<bool, String> {
    let mut conn = bughive_gateway::store::connect(url, 0)
        .await
        .map_err(|e| e.to_string())?;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Ssl {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ssl: bool,
    }
    let row: Ssl = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.ssl)
}

fn gateway(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bughive-gateway"))
        .args(args)
        .env("DATABASE_URL", url)
        .env_remove("JWT_SECRET")
        .output()
        .expect("run the gateway")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgresql_in_every_sslmode() {
    let dir = std::env::temp_dir().join(format!("bh-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let opts = EmbeddedOptions::new(dir.join("pg"));
    let pg = EmbeddedPg::start(&opts).expect("start a cluster");

    let c = certs();
    let data = pg.data_dir().to_path_buf();
    // As root the cluster runs as `postgres`, which must own its key.
    let owner = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&data).expect("data dir");
        Some((m.uid(), m.gid()))
    };
    server_file(&data.join("server.crt"), &c.server_cert, owner);
    server_file(&data.join("server.key"), &c.server_key, owner);
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &c.ca).expect("ca");
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&other_ca, &c.other_ca).expect("other ca");

    let port = free_port();
    let tls = opts
        .clone()
        .setting("listen_addresses", "'127.0.0.1'")
        .setting("port", &port.to_string())
        .setting("ssl", "on")
        .setting("ssl_cert_file", "'server.crt'")
        .setting("ssl_key_file", "'server.key'");
    pg.restart(&tls).expect("restart with TLS");
    let url =
        |host: &str, params: &str| format!("postgres://bughive@{host}:{port}/postgres?{params}");
    let started = Instant::now();
    while connects(&url("localhost", "sslmode=disable"))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server never listened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ca_s = ca.display().to_string();
    let other_s = other_ca.display().to_string();
    // verify-full: the chain ends at our CA and the certificate names `localhost`.
    assert_eq!(
        connects(&url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca_s}")
        ))
        .await,
        Ok(true)
    );
    // The same in libpq's key=value form.
    assert_eq!(
        connects(&format!(
            "host=localhost port={port} user=bughive dbname=postgres sslmode=verify-full sslrootcert='{ca_s}'"
        ))
        .await,
        Ok(true)
    );
    // A certificate from another CA is refused, and the error says why.
    let err = connects(&url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other_s}"),
    ))
    .await
    .expect_err("wrong CA");
    assert!(
        err.contains("UnknownIssuer") || err.contains("unknown issuer"),
        "{err}"
    );
    // 127.0.0.1 is not a name the certificate holds: verify-full refuses, verify-ca does not.
    let err = connects(&url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca_s}"),
    ))
    .await
    .expect_err("wrong host name");
    assert!(err.contains("not valid for name"), "{err}");
    assert_eq!(
        connects(&url(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca_s}")
        ))
        .await,
        Ok(true)
    );
    // require and prefer encrypt without verifying; disable does not encrypt.
    assert_eq!(
        connects(&url("127.0.0.1", "sslmode=require")).await,
        Ok(true)
    );
    assert_eq!(
        connects(&url("127.0.0.1", "sslmode=prefer")).await,
        Ok(true)
    );
    assert_eq!(
        connects(&url("127.0.0.1", "sslmode=disable")).await,
        Ok(false)
    );

    // The CLI (migrations) and the server (pool and change listener) run over verify-full; a
    // wrong CA stops them at start-up with the cause.
    let good = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca_s}"),
    );
    let out = gateway(&good, &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other_s}"),
    );
    let out = gateway(&bad, &["migrate"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UnknownIssuer") || stderr.contains("unknown issuer"),
        "{stderr}"
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_bughive-gateway"))
        .args(["serve", "--listen", &listen])
        .env("DATABASE_URL", &good)
        .env_remove("JWT_SECRET")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    let started = Instant::now();
    let ready = loop {
        if let Ok(r) = reqwest::get(format!("http://{listen}/ready")).await
            && r.status() == 200
        {
            let v: serde_json::Value = r.json().await.expect("json");
            // Ready: the pool answers and the change listener is connected, both over TLS.
            if v["listening"] == true {
                break v;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the gateway never got ready over TLS"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(ready["status"], "ready", "{ready}");

    // Client certificates: with `cert` authentication over TCP, sslcert/sslkey log in and their
    // absence is refused.
    server_file(&data.join("root.crt"), &c.ca, owner);
    let hba = data.join("pg_hba.conf");
    let original_hba = std::fs::read_to_string(&hba).expect("hba");
    server_file(
        &hba,
        "local all all trust\nhostssl all all 127.0.0.1/32 cert\n",
        owner,
    );
    let with_ca = tls.clone().setting("ssl_ca_file", "'root.crt'");
    pg.restart(&with_ca)
        .expect("restart with client certificates");
    let client_cert = dir.join("client.crt");
    let client_key = dir.join("client.key");
    std::fs::write(&client_cert, &c.client_cert).expect("client cert");
    server_file(&client_key, &c.client_key, None);
    let with_cert = url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={ca_s}&sslcert={}&sslkey={}",
            client_cert.display(),
            client_key.display()
        ),
    );
    let started = Instant::now();
    let mut result = connects(&with_cert).await;
    while result.is_err() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        result = connects(&with_cert).await;
    }
    assert_eq!(result, Ok(true));
    let err = connects(&url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca_s}"),
    ))
    .await
    .expect_err("no client certificate");
    assert!(err.contains("certificate"), "{err}");
    server_file(&hba, &original_hba, owner);

    // A server without TLS: require fails and says so; prefer falls back to plain text.
    let plain = opts
        .clone()
        .setting("listen_addresses", "'127.0.0.1'")
        .setting("port", &port.to_string());
    pg.restart(&plain).expect("restart without TLS");
    let started = Instant::now();
    while connects(&url("127.0.0.1", "sslmode=disable"))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = connects(&url("127.0.0.1", "sslmode=require"))
        .await
        .expect_err("no TLS");
    assert!(err.contains("TLS") || err.contains("SSL"), "{err}");
    assert_eq!(
        connects(&url("127.0.0.1", "sslmode=prefer")).await,
        Ok(false)
    );

    pg.stop().expect("stop");
    let _ = std::fs::remove_dir_all(&dir);
}
