use std::time::Duration;

use super::*;

fn rings() -> (Arc<Ring>, Arc<Ring>) {
    (
        Arc::new(Ring::new(&["a", "b"], 64).expect("ring")),
        Arc::new(Ring::new(&["a", "b", "c"], 64).expect("ring")),
    )
}

#[tokio::test]
async fn freeze_waits_for_tickets_of_the_era_before_it_only() {
    let cutover = Arc::new(Cutover::default());
    let before = cutover.ticket();
    let (old, new) = rings();
    let freeze = cutover.begin(old, new).expect("begins");
    assert!(freeze.moving_ranges > 0);
    assert!(before.era() < freeze.era, "the open session is exempt");
    let after = cutover.ticket();
    assert!(after.era() >= freeze.era, "a new session is held");
    let draining = {
        let (cutover, freeze) = (cutover.clone(), freeze.clone());
        tokio::spawn(async move { cutover.drain(&freeze).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!draining.is_finished(), "FREEZE waits for the open session");
    drop(before);
    tokio::time::timeout(Duration::from_secs(2), draining)
        .await
        .expect("drained once the old ticket is gone")
        .expect("task");
    assert!(cutover.frozen(&freeze));
    assert_eq!(cutover.status().phase, Phase::Frozen);
    drop(after);
}

#[tokio::test]
async fn release_wakes_waiters_and_records_the_pause() {
    let cutover = Cutover::default();
    assert_eq!(cutover.abort(), Err(CutoverError::NotFrozen));
    assert_eq!(cutover.frozen_freeze().err(), Some(CutoverError::NotFrozen));
    let (old, new) = rings();
    let freeze = cutover.begin(old.clone(), new.clone()).expect("begins");
    assert_eq!(
        cutover.frozen_freeze().err(),
        Some(CutoverError::StillFreezing)
    );
    assert!(matches!(
        cutover.begin(old, new),
        Err(CutoverError::Busy("freezing"))
    ));
    cutover.drain(&freeze).await;
    assert!(cutover.frozen(&freeze));
    let waiter = freeze.waiter();
    assert_eq!(cutover.status().waiting, 1);
    let wait = {
        let freeze = freeze.clone();
        tokio::spawn(async move { freeze.released().await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!wait.is_finished());
    let taken = cutover.frozen_freeze().expect("frozen");
    assert!(cutover.release(&taken, true).is_some());
    tokio::time::timeout(Duration::from_secs(2), wait)
        .await
        .expect("released")
        .expect("task");
    drop(waiter);
    let status = cutover.status();
    assert_eq!(status.phase, Phase::Switched);
    assert_eq!(status.waiting, 0);
    assert!(status.last_pause_ms.is_some());
    assert!(!cutover.is_frozen());
    assert!(cutover.release(&freeze, false).is_none(), "released once");
}

#[tokio::test]
async fn an_aborted_freeze_still_drains_older_eras_next_time() {
    let cutover = Cutover::default();
    let oldest = cutover.ticket();
    let (old, new) = rings();
    let first = cutover.begin(old.clone(), new.clone()).expect("begins");
    cutover.abort().expect("aborts while freezing");
    assert_eq!(cutover.status().phase, Phase::Aborted);
    assert!(
        !cutover.frozen(&first),
        "an aborted freeze cannot become frozen"
    );
    let second = cutover.begin(old, new).expect("begins again");
    let drained = tokio::time::timeout(Duration::from_millis(50), cutover.drain(&second)).await;
    assert!(
        drained.is_err(),
        "the oldest session's transaction is still open"
    );
    drop(oldest);
    tokio::time::timeout(Duration::from_secs(2), cutover.drain(&second))
        .await
        .expect("drained");
}
