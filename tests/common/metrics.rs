//! Scraping `/metrics` over plain HTTP and parsing the Prometheus text format, for tests.

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{within, Env};

/// A parsed Prometheus text exposition: series (`name{labels}`) → value, and each name's type.
pub struct Scrape {
    pub values: HashMap<String, f64>,
    pub types: HashMap<String, String>,
}

impl Scrape {
    pub fn value(&self, series: &str) -> f64 {
        *self
            .values
            .get(series)
            .unwrap_or_else(|| panic!("no series {series}"))
    }

    /// Sum over the series of `name` whose labels contain every `label="value"` given.
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.values
            .iter()
            .filter(|(series, _)| {
                let base = series.split('{').next().unwrap_or_default();
                base == name && labels.iter().all(|l| series.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

pub async fn scrape(env: &Env) -> Scrape {
    let url = env.metrics_url();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let mut stream = within("metrics connect", tokio::net::TcpStream::connect(&addr))
        .await
        .expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: pgscale\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    within("metrics read", stream.read_to_string(&mut response))
        .await
        .expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut values = HashMap::new();
    let mut types = HashMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a number in `{line}`"));
        values.insert(series.to_string(), value);
    }
    Scrape { values, types }
}
