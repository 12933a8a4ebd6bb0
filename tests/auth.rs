//! Client authentication and startup through pgscale: SCRAM, md5, trust, the errors Postgres gives,
//! and malformed or oversized input that must close only the offending connection.

mod common;

use common::raw::{frame, read_msg, startup_packet, RawClient};
use common::{sqlstate, try_connect, Env};
use pgscale::config::PoolMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_auth_method_logs_in_and_wrong_passwords_fail() {
    let env = Env::start(PoolMode::Transaction, 4).await;
    for (user, password) in [
        ("app", common::APP_PASSWORD),
        ("md5user", "md5-secret"),
        ("trustuser", "whatever"),
    ] {
        let client = try_connect(&env.conn_str(user, password, "app"))
            .await
            .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
        let who: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .expect("query")
            .get(0);
        assert_eq!(who, user);
    }
    for (user, password) in [("app", "wrong"), ("md5user", "wrong"), ("nobody", "x")] {
        let err = try_connect(&env.conn_str(user, password, "app"))
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} with a wrong password must fail"));
        assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{user}: {err}");
        let message = err
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert_eq!(
            message,
            format!("password authentication failed for user \"{user}\"")
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_secret_in_config_works_without_plain_password() {
    let secret = postgres_protocol::password::scram_sha_256(b"from-verifier");
    let env = Env::start_with(
        move |c| {
            c.users.push(pgscale::config::UserConfig {
                scram_secret: Some(secret),
                server_user: Some("app".into()),
                server_password: Some(common::APP_PASSWORD.into()),
                ..common::user("verifier", None, pgscale::config::AuthMethod::ScramSha256)
            });
        },
        PoolMode::Transaction,
        2,
    )
    .await;
    let client = try_connect(&env.conn_str("verifier", "from-verifier", "app"))
        .await
        .expect("login with verifier");
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(who, "app", "server side uses server_user");
    let err = try_connect(&env.conn_str("verifier", "nope", "app"))
        .await
        .expect_err("wrong");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_gives_postgres_error() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    let err = try_connect(&env.conn_str("app", common::APP_PASSWORD, "no_such_db"))
        .await
        .expect_err("unknown database");
    assert_eq!(sqlstate(&err).as_deref(), Some("3D000"), "{err}");
    // The psql command line sees the same.
    let out = common::run_command({
        let mut c = std::process::Command::new(common::pg_tool("psql"));
        c.arg(env.url("app", common::APP_PASSWORD, "no_such_db"))
            .args(["-X", "-c", "select 1"]);
        c
    })
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("database \"no_such_db\" does not exist"),
        "{stderr}"
    );
    env.stop().await;
}

/// Writes `bytes` as a fresh client and returns the SQLSTATE of the error it gets, checking that the
/// proxy then closes the socket.
async fn error_then_close(port: u16, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut code = String::new();
    while let Some((tag, body)) = read_msg(&mut stream).await {
        if tag == b'E' {
            code = common::raw::error_code(&body);
        }
    }
    let mut rest = [0u8; 1];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut rest))
        .await
        .expect("socket closed, not hanging")
        .unwrap_or(0);
    assert_eq!(n, 0, "socket closed");
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_and_oversized_messages_close_only_that_client() {
    let env = Env::start_with(
        |c| c.listen.max_message_size = 64 * 1024,
        PoolMode::Transaction,
        2,
    )
    .await;
    let bystander = env.app().await;

    // Wrong protocol version.
    let mut v2 = startup_packet(&[("user", "app")]);
    v2[4..8].copy_from_slice(&(2i32 << 16).to_be_bytes());
    assert_eq!(error_then_close(env.port, &v2).await, "0A000");
    // A length that lies, and a huge length.
    assert_eq!(
        error_then_close(env.port, &[0, 0, 0, 3, 0, 3, 0, 0]).await,
        "08P01"
    );
    assert_eq!(
        error_then_close(env.port, &[0x7f, 0, 0, 0, 0, 3, 0, 0]).await,
        "08P01"
    );
    // Parameters without a terminator, and no user.
    let mut broken = startup_packet(&[("user", "app")]);
    broken.pop();
    let len = broken.len() as i32;
    broken[..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(error_then_close(env.port, &broken).await, "08P01");
    assert_eq!(
        error_then_close(env.port, &startup_packet(&[("database", "app")])).await,
        "08P01"
    );

    // After login: an oversized message, a bad length, an unknown message type.
    for bad in [
        {
            let mut f = vec![b'Q'];
            f.extend_from_slice(&(1_000_000i32).to_be_bytes());
            f
        },
        vec![b'Q', 0, 0, 0, 1],
        frame(b'!', b"x"),
    ] {
        let mut raw = RawClient::connect(env.port, &[("user", "trustuser"), ("database", "app")])
            .await
            .expect("login");
        raw.stream.write_all(&bad).await.expect("write");
        let (tag, body) = read_msg(&mut raw.stream).await.expect("error reply");
        assert_eq!(tag, b'E');
        assert_eq!(common::raw::error_code(&body), "08P01");
        assert!(
            read_msg(&mut raw.stream).await.is_none(),
            "closed after the error"
        );
    }
    // A connection that sends nothing at all until it gives up does not bother anyone.
    let silent = TcpStream::connect(("127.0.0.1", env.port))
        .await
        .expect("connect");
    drop(silent);

    let one: i32 = bystander
        .query_one("SELECT 1", &[])
        .await
        .expect("others keep working")
        .get(0);
    assert_eq!(one, 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gss_requests_are_declined_then_startup_proceeds() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    for code in [80_877_103i32, 80_877_104] {
        let mut stream = TcpStream::connect(("127.0.0.1", env.port))
            .await
            .expect("connect");
        let mut request = 8i32.to_be_bytes().to_vec();
        request.extend_from_slice(&code.to_be_bytes());
        stream.write_all(&request).await.expect("write");
        let mut answer = [0u8; 1];
        stream.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"N");
        stream
            .write_all(&startup_packet(&[
                ("user", "trustuser"),
                ("database", "app"),
            ]))
            .await
            .expect("startup");
        let mut saw_ready = false;
        while let Some((tag, _)) = read_msg(&mut stream).await {
            if tag == b'Z' {
                saw_ready = true;
                break;
            }
        }
        assert!(saw_ready);
    }
    // libpq's default sslmode=prefer falls back to plain text.
    let out = common::run_command({
        let mut c = std::process::Command::new(common::pg_tool("psql"));
        c.arg(format!("{}?sslmode=prefer", env.app_url())).args([
            "-X",
            "-A",
            "-t",
            "-c",
            "select 'ok'",
        ]);
        c
    })
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    env.stop().await;
}

/// Issue 11: user names were echoed whole in errors (a 10 kB name, 10 kB of error). Like Postgres,
/// names are cut to NAMEDATALEN - 1 = 63 bytes, on a character boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_user_names_are_cut_to_63_bytes_in_errors() {
    let env = Env::start(PoolMode::Transaction, 2).await;
    // Two bytes a character: 63 bytes would split one, so 31 characters (62 bytes) remain.
    // 9 kB: the startup packet itself is limited to 10 000 bytes, as in Postgres.
    let user = "é".repeat(4_500);
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(env.port)
        .user(&user)
        .password("x")
        .dbname("app");
    let err = common::within("login with a long user name", async {
        config.connect(tokio_postgres::NoTls).await.map(drop)
    })
    .await
    .expect_err("an unknown user");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(
        db.code().code(),
        "28P01",
        "{}",
        db.message().chars().take(300).collect::<String>()
    );
    assert!(
        db.message().len() < 200,
        "{} bytes of message",
        db.message().len()
    );
    assert!(
        db.message()
            .contains(&format!("for user \"{}\"", "é".repeat(31))),
        "{}",
        db.message()
    );
    env.stop().await;
}
