//! Table tests of the policy's rules on time: the delay target, the saturated sink, the pause,
//! and the ages of the oldest unconsumed records. Each poll gives the group's offsets as a
//! backlog and a committed position; time is a fixed origin plus seconds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use wapipe_operator::scaler::policy::{
    decide_timed, replicas_for_delay, Decision, PartitionOffsets, Pause, PolicyConfig, PolicyState,
    Reason,
};
use wapipe_operator::scaler::rate::RecordTimes;

#[path = "support/text.rs"]
mod text;

use text::assert_contains;

const PARTITIONS: i32 = 12;

/// Twelve partitions sharing `committed` records committed and `lag` records of backlog evenly.
fn offsets(committed: i64, lag: i64) -> Vec<PartitionOffsets> {
    (0..PARTITIONS)
        .map(|partition| {
            let share = |total: i64| {
                total / i64::from(PARTITIONS)
                    + i64::from(i64::from(partition) < total % i64::from(PARTITIONS))
            };
            let committed = share(committed);
            PartitionOffsets {
                partition,
                committed: Some(committed),
                log_start: 0,
                log_end: committed + share(lag),
            }
        })
        .collect()
}

fn config(lag_per_replica: u64, max_delay: Option<u64>) -> PolicyConfig {
    PolicyConfig {
        min_replicas: 1,
        max_replicas: 12,
        lag_per_replica,
        max_delay: max_delay.map(Duration::from_secs),
        ..PolicyConfig::default()
    }
}

/// One poll: seconds since the start, records committed so far, lag, replicas running, and the
/// expected (desired, reason).
struct Poll {
    at: u64,
    committed: i64,
    lag: i64,
    current: u32,
    expect: (u32, Reason),
}

fn poll(at: u64, committed: i64, lag: i64, current: u32, expect: (u32, Reason)) -> Poll {
    Poll {
        at,
        committed,
        lag,
        current,
        expect,
    }
}

fn run(config: &PolicyConfig, polls: &[Poll]) -> Decision {
    let origin = Instant::now();
    let mut state = PolicyState::default();
    let mut last = None;
    for (index, p) in polls.iter().enumerate() {
        let decision = decide_timed(
            config,
            &mut state,
            &offsets(p.committed, p.lag),
            &BTreeMap::new(),
            p.current,
            origin + Duration::from_secs(p.at),
        );
        assert_eq!(
            (decision.desired, decision.reason),
            p.expect,
            "poll {index} at {}s: {}",
            p.at,
            decision.message
        );
        last = Some(decision);
    }
    last.expect("at least one poll")
}

#[test]
fn a_pool_catching_up_within_the_delay_target_is_not_scaled_up_whatever_its_offset_lag() {
    // Two workers drain 1,000/s (500 each) while 600/s arrive: 40,000 behind, 400/s less each
    // second, the backlog is gone in 100 s, within the 120 s target. The offset rule
    // (1,000 per replica) asks for every partition until the drain rate is known.
    let up = (12, Reason::ScaledUp);
    let steady = (2, Reason::Steady);
    let polls: Vec<Poll> = (0..8)
        .map(|n| {
            let at = n * 10;
            let expect = if at < 40 { up } else { steady };
            poll(at, 10_000 * n as i64, 40_000 - 4_000 * n as i64, 2, expect)
        })
        .collect();
    let last = run(&config(1000, Some(120)), &polls);
    assert_eq!(last.per_replica_rate.map(|r| r.round()), Some(500.0));
    assert_eq!(last.arrival_rate.map(|r| r.round()), Some(600.0));
    assert_contains(&last.message, "120 s delay target");
}

#[test]
fn arrivals_above_the_drain_rate_scale_up_before_the_offset_threshold_is_reached() {
    // One worker drains 1,000/s while 1,500/s arrive. With 100,000 offsets per replica the
    // offset rule waits until the lag passes 100,000 (over three minutes of growth); the delay
    // target asks for a second worker as soon as the rate is measured, at 22,000 behind.
    let polls: Vec<Poll> = (0..5)
        .map(|n| {
            let expect = if n < 4 {
                (1, Reason::Steady)
            } else {
                (2, Reason::ScaledUp)
            };
            poll(
                n * 10,
                10_000 * n as i64,
                2_000 + 5_000 * n as i64,
                1,
                expect,
            )
        })
        .collect();
    run(&config(100_000, Some(60)), &polls);
    // Without the target the same polls stay at one worker.
    let offsets_only: Vec<Poll> = polls
        .iter()
        .map(|p| poll(p.at, p.committed, p.lag, 1, (1, Reason::Steady)))
        .collect();
    run(&config(100_000, None), &offsets_only);
}

#[test]
fn replicas_for_delay_keep_up_with_arrivals_and_drain_the_backlog_within_the_target() {
    // (arrival + lag / target) / per replica, the running count kept within 10 %.
    assert_eq!(
        replicas_for_delay(Duration::from_secs(10), 1000.0, 20_000, 1000.0, 1),
        3
    );
    assert_eq!(
        replicas_for_delay(Duration::from_secs(10), 1000.0, 500, 1000.0, 1),
        1
    );
    // A pool of 6 with a third of the work left goes down to what it needs.
    assert_eq!(
        replicas_for_delay(Duration::from_secs(10), 1500.0, 0, 1000.0, 6),
        2
    );
    assert_eq!(
        replicas_for_delay(Duration::from_secs(10), 0.0, 0, 1000.0, 0),
        0
    );
}

/// Two workers at 1,000/s with lag growing 1,000 a poll, scaled to three at 20,100 behind; at
/// three the group drains `drain_at_three`/s, and each poll from the first capacity measured
/// at three (100 s: settled 30 s after the change at 60 s) on expects `at_three_measured`.
fn sink_scenario(drain_at_three: i64, at_three_measured: (u32, Reason)) -> Vec<Poll> {
    let mut polls = Vec::new();
    let mut committed = 0;
    for n in 0..5 {
        polls.push(poll(
            n * 10,
            committed,
            15_000 + 1_000 * n as i64,
            2,
            (2, Reason::Steady),
        ));
        committed += 10_000;
    }
    polls.push(poll(50, committed, 20_100, 2, (3, Reason::ScaledUp)));
    let mut lag = 20_100;
    for n in 6..16 {
        committed += drain_at_three * 10;
        lag += 11_000 - drain_at_three * 10;
        let expect = if n >= 10 {
            at_three_measured
        } else {
            (3, Reason::Steady)
        };
        polls.push(poll(n * 10, committed, lag, 3, expect));
    }
    polls
}

#[test]
fn a_third_worker_that_did_not_raise_the_drain_rate_holds_further_scale_up() {
    // The sink takes 1,000/s whatever the workers: 3 drain what 2 drained. From the first
    // measurement at 3 on, 2 are all that help: the pool is held at 3 (it would come down to 2
    // after the window) though the lag passes 30,000 (4 wanted at 10,000 per replica).
    let polls = sink_scenario(1000, (3, Reason::SinkSaturated));
    assert!(polls.iter().any(|p| p.lag > 30_000));
    let last = run(&config(10_000, None), &polls);
    assert!(last.held(), "{}", last.message);
    assert_eq!(last.recommendation, 2);
    assert_contains(
        &last.message,
        "4 wanted, held at 2: 3 workers drained 1000/s, 2 drained 1000/s",
    );
}

#[test]
fn a_saturated_pool_comes_down_to_the_workers_that_help_after_the_window() {
    let mut polls = sink_scenario(1000, (3, Reason::SinkSaturated));
    let (mut committed, lag) = (polls[15].committed, polls[15].lag);
    // The window (300 s) since the last recommendation of 3 (at 90 s) ends at 390 s.
    for n in 16..40 {
        committed += 10_000;
        let expect = if n * 10 >= 390 {
            (2, Reason::ScaledDown)
        } else {
            (3, Reason::SinkSaturated)
        };
        polls.push(poll(
            n * 10,
            committed,
            lag + 1_000 * (n - 15) as i64,
            3,
            expect,
        ));
    }
    run(&config(10_000, None), &polls);
}

#[test]
fn more_workers_that_drain_faster_are_not_taken_for_a_saturated_sink() {
    // Three drain 1,500/s (50 % more than two): the lag still passes 30,000, and the pool grows.
    let mut polls = sink_scenario(1500, (3, Reason::Steady));
    let mut committed = polls[5].committed;
    let mut lag = polls[5].lag;
    polls.truncate(6);
    for n in 6..20 {
        committed += 15_000;
        lag += 16_500 - 15_000;
        let expect = if lag > 30_000 {
            (((lag + 9_999) / 10_000) as u32, Reason::ScaledUp)
        } else {
            (3, Reason::Steady)
        };
        polls.push(poll(n * 10, committed, lag, 3, expect));
    }
    assert!(polls
        .iter()
        .any(|p| p.expect.1 == Reason::ScaledUp && p.at > 50));
    run(&config(10_000, None), &polls);
}

#[test]
fn workers_that_commit_nothing_while_behind_are_not_joined_by_more() {
    // The sink fails: nothing is committed between the two polls while lag grows to three
    // workers' worth. The first poll has no rate yet; the second holds.
    let polls = [
        poll(0, 5_000, 1_000, 1, (1, Reason::Steady)),
        poll(10, 5_000, 3_000, 1, (1, Reason::SinkSaturated)),
    ];
    let last = run(&config(1000, None), &polls);
    assert_contains(&last.message, "committed nothing");
}

#[test]
fn a_hold_for_a_failing_sink_still_puts_back_what_a_person_scaled_down_by_hand() {
    // Three workers ran; nothing is committed; someone scales the Deployment to one. The hold
    // adds no worker beyond the scaler's own three, but the three come back: the scaler owns
    // the replicas.
    let polls = [
        poll(0, 5_000, 3_000, 3, (3, Reason::Steady)),
        poll(10, 5_000, 3_000, 3, (3, Reason::Steady)),
        poll(20, 5_000, 6_000, 1, (3, Reason::SinkSaturated)),
        poll(30, 5_000, 9_000, 3, (3, Reason::SinkSaturated)),
    ];
    run(&config(1000, None), &polls);
}

#[test]
fn a_paused_scaler_holds_the_current_count_or_the_one_it_was_given() {
    let mut paused = config(1000, None);
    paused.pause = Some(Pause::Current);
    let last = run(
        &paused,
        &[
            poll(0, 0, 50_000, 2, (2, Reason::Paused)),
            poll(10, 0, 0, 2, (2, Reason::Paused)),
        ],
    );
    assert!(last.held());
    assert_contains(&last.message, "scaling paused: held at 2");
    paused.pause = Some(Pause::At(0));
    run(&paused, &[poll(0, 0, 50_000, 3, (0, Reason::Paused))]);
    // A count above the partitions is capped like any other.
    paused.pause = Some(Pause::At(40));
    run(&paused, &[poll(0, 0, 0, 3, (12, Reason::Paused))]);
}

#[test]
fn idle_partitions_are_zero_seconds_behind_and_the_worst_partition_is_named() {
    let config = config(1000, None);
    let mut state = PolicyState::default();
    let mut offsets = offsets(1200, 0);
    offsets[3].log_end += 50;
    offsets[7].log_end += 10;
    let ages = BTreeMap::from([
        (3, Duration::from_secs(12)),
        (7, Duration::from_secs(90)),
        // An age for a partition without lag (read before it caught up) is not believed.
        (5, Duration::from_secs(500)),
    ]);
    let decision = decide_timed(&config, &mut state, &offsets, &ages, 1, Instant::now());
    assert_eq!(decision.worst, Some((7, Duration::from_secs(90))));
    let by_partition: BTreeMap<i32, Option<Duration>> = decision
        .partitions
        .iter()
        .map(|p| (p.partition, p.time_lag))
        .collect();
    assert_eq!(by_partition[&5], Some(Duration::ZERO));
    assert_eq!(by_partition[&3], Some(Duration::from_secs(12)));
    assert_contains(&decision.message, "90s old (partition 7)");
}

#[test]
fn a_stalled_partitions_oldest_record_is_read_once_and_its_age_keeps_growing() {
    let mut times = RecordTimes::default();
    let mut offsets = offsets(1200, 0);
    offsets[2].log_end += 40;
    let wanted = times.to_read(&offsets, 32);
    assert_eq!(wanted, vec![(2, offsets[2].committed.unwrap())]);
    times.learn([(2, (offsets[2].committed.unwrap(), 1_000_000))]);
    // The position did not move: nothing to read again, and the age follows the clock.
    assert!(times.to_read(&offsets, 32).is_empty());
    assert_eq!(times.ages(1_030_000)[&2], Duration::from_secs(30));
    assert_eq!(times.ages(1_090_000)[&2], Duration::from_secs(90));
    // Once the group moves on, the old timestamp is forgotten and the new position is read.
    offsets[2].committed = Some(offsets[2].committed.unwrap() + 5);
    assert_eq!(
        times.to_read(&offsets, 32),
        vec![(2, offsets[2].committed.unwrap())]
    );
    assert!(times.ages(1_090_000).is_empty());
}

#[test]
fn record_reads_per_poll_are_bounded_and_go_to_the_partitions_most_behind() {
    let mut times = RecordTimes::default();
    let mut offsets = offsets(0, 0);
    for (partition, extra) in offsets.iter_mut().zip(1..) {
        partition.log_end += extra * 10;
    }
    let wanted: Vec<i32> = times.to_read(&offsets, 3).iter().map(|(p, _)| *p).collect();
    assert_eq!(wanted, vec![11, 10, 9]);
}
