//! Which functions write, per database: the built-in and configured names plus the user-defined
//! `VOLATILE` functions learnt from `pg_proc`, so `SELECT create_order(…)` reaches the primary without
//! anyone listing it. Learnt at a database's first login, then re-read in the background when older
//! than `routing.catalog_refresh_ms` or after function DDL passed through the proxy.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::config::RoutingConfig;
use crate::pool::query::query_rows;
use crate::pool::server::{ServerConn, ServerError};
use crate::pool::Pool;
use crate::router::functions::{FunctionCatalog, LEARN_VOLATILE_SQL};

/// The catalogs of every database clients have used.
pub struct Catalogs {
    base: Arc<FunctionCatalog>,
    learn: bool,
    refresh_after: Duration,
    by_db: DashMap<String, Arc<DbCatalog>>,
}

/// One database's catalog and when it was read.
pub struct DbCatalog {
    current: ArcSwap<FunctionCatalog>,
    /// Milliseconds since [`epoch`] of the last load, plus one (0: never loaded).
    loaded_at: AtomicU64,
    stale: AtomicBool,
    refreshing: AtomicBool,
}

impl Catalogs {
    pub fn new(config: &RoutingConfig) -> Catalogs {
        Catalogs {
            base: Arc::new(FunctionCatalog::new(&config.write_functions)),
            learn: config.volatile_functions_are_writes,
            refresh_after: config.catalog_refresh(),
            by_db: DashMap::new(),
        }
    }

    /// The catalog of `database` (the built-in one until it has been learnt).
    pub fn get(&self, database: &str) -> Arc<DbCatalog> {
        if let Some(found) = self.by_db.get(database) {
            return found.clone();
        }
        self.by_db
            .entry(database.to_string())
            .or_insert_with(|| {
                Arc::new(DbCatalog {
                    current: ArcSwap::new(self.base.clone()),
                    loaded_at: AtomicU64::new(0),
                    stale: AtomicBool::new(false),
                    refreshing: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Whether `catalog` must be read before routing relies on it (never read yet).
    pub fn needs_first_load(&self, catalog: &DbCatalog) -> bool {
        self.learn && catalog.loaded_at().is_none()
    }

    /// Reads the database's functions on `conn` (a primary connection of that database).
    pub async fn load(
        &self,
        catalog: &DbCatalog,
        conn: &mut ServerConn,
    ) -> Result<(), ServerError> {
        let rows = query_rows(conn, LEARN_VOLATILE_SQL).await?;
        let names = rows
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten());
        let learnt = self.base.with_learned(names);
        tracing::debug!(
            functions = learnt.learned_len(),
            "learnt volatile functions"
        );
        catalog.current.store(Arc::new(learnt));
        catalog.loaded_at.store(now_ms() + 1, Ordering::Relaxed);
        catalog.stale.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Starts a background re-read of `catalog` through `pool` when it is stale or old; at most one
    /// runs per database. Cheap when nothing is due (two atomic loads).
    pub fn refresh_if_due(self: &Arc<Self>, catalog: &Arc<DbCatalog>, pool: &Arc<Pool>) {
        if !self.learn {
            return;
        }
        let old = catalog
            .loaded_at()
            .is_none_or(|at| now_ms().saturating_sub(at) >= self.refresh_after.as_millis() as u64);
        if !(old || catalog.stale.load(Ordering::Relaxed)) {
            return;
        }
        if catalog.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (catalogs, catalog, pool) = (self.clone(), catalog.clone(), pool.clone());
        tokio::spawn(async move {
            let result = match pool.checkout().await {
                Ok(mut conn) => {
                    let loaded = catalogs.load(&catalog, &mut conn).await;
                    if loaded.is_ok() {
                        conn.release();
                    }
                    loaded.map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            if let Err(error) = result {
                tracing::warn!(pool = %pool.key, %error, "re-reading the function catalog failed");
                // Try again at the next chance rather than after a full refresh period.
                catalog.stale.store(true, Ordering::Relaxed);
            }
            catalog.refreshing.store(false, Ordering::Release);
        });
    }
}

impl DbCatalog {
    /// The catalog to route with now.
    pub fn current(&self) -> arc_swap::Guard<Arc<FunctionCatalog>> {
        self.current.load()
    }

    /// Function DDL went through the proxy: re-read at the next chance.
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// When it was last loaded, in milliseconds since [`epoch`].
    fn loaded_at(&self) -> Option<u64> {
        self.loaded_at.load(Ordering::Relaxed).checked_sub(1)
    }
}

/// Milliseconds since the first call: a clock that fits an atomic.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}
