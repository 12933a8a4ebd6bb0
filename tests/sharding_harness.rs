//! The sharded test harness: `Env::start_with_shards` starts distinct servers per shard and a proxy
//! whose config names them all, and schema can be created on every shard directly.

mod common;

use common::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_are_three_servers_with_the_schema_and_a_sharded_config() {
    let env = Env::start_with_shards(3, 0, pgscale::demo::SAMPLE_SHARDING, |_| {}).await;
    env.exec_on_all_shards(pgscale::demo::SAMPLE_SCHEMA).await;

    let mut ports = Vec::new();
    for i in 0..env.shard_count() {
        let client = env.direct_to_shard(i).await;
        let row = client
            .query_one(
                "select inet_server_port(), to_regclass('pitches') is not null",
                &[],
            )
            .await
            .expect("query shard");
        let (port, has_schema): (i32, bool) = (row.get(0), row.get(1));
        assert_eq!(port, i32::from(env.shard_primary(i).port()), "shard {i}");
        assert!(has_schema, "shard {i} has the sample schema");
        ports.push(port);
    }
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "three distinct servers");

    // The proxy knows every shard's primary and answers (routing by key is not tested here).
    let shared = env.proxy.as_ref().expect("proxy").shared().clone();
    let backend_ports: Vec<u16> = shared
        .topology()
        .shards
        .iter()
        .map(|s| s.primary.addr.port)
        .collect();
    let primaries: Vec<u16> = (0..3).map(|i| env.shard_primary(i).port()).collect();
    assert_eq!(backend_ports, primaries);
    let app = env.app().await;
    let one: i32 = app.query_one("select 1", &[]).await.expect("select").get(0);
    assert_eq!(one, 1);
    env.stop().await;
}
