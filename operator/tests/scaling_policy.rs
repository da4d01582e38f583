//! Table tests of the pure scaling policy, one table per KEDA failure it must not repeat.
//! Time is a fixed origin plus offsets in seconds: no test depends on the wall clock.

use std::time::{Duration, Instant};

use wapipe_operator::scaler::policy::{
    decide, Decision, PartitionOffsets, PartitionStatus, PolicyConfig, PolicyState, Reason,
};

/// The offsets of one partition.
fn offsets(
    partition: i32,
    committed: Option<i64>,
    log_start: i64,
    log_end: i64,
) -> PartitionOffsets {
    PartitionOffsets {
        partition,
        committed,
        log_start,
        log_end,
    }
}

/// `partitions` partitions, each committed at `end - lag_each` of `end`.
fn even_lag(partitions: i32, total_lag: i64) -> Vec<PartitionOffsets> {
    (0..partitions)
        .map(|partition| {
            let share = total_lag / i64::from(partitions)
                + i64::from(i64::from(partition) < total_lag % i64::from(partitions));
            offsets(partition, Some(10_000 - share), 0, 10_000)
        })
        .collect()
}

/// The decision of a caller polling for the first time, with `current` replicas running.
fn first_decision(config: &PolicyConfig, offsets: &[PartitionOffsets], current: u32) -> Decision {
    decide(
        config,
        &mut PolicyState::default(),
        offsets,
        current,
        Instant::now(),
    )
}

fn config(min: u32, max: u32, lag_per_replica: u64) -> PolicyConfig {
    PolicyConfig {
        min_replicas: min,
        max_replicas: max,
        lag_per_replica,
        scale_down_window: Duration::from_secs(300),
        activation_lag: 0,
        scale_to_zero: false,
        stall_polls: 3,
        max_delay: None,
        pause: None,
    }
}

/// One poll of a scenario: seconds since the start, offsets, replicas running, expected outcome.
struct Step {
    at_secs: u64,
    offsets: Vec<PartitionOffsets>,
    current: u32,
    desired: u32,
    reason: Reason,
}

fn run(config: &PolicyConfig, steps: Vec<Step>) {
    let origin = Instant::now();
    let mut state = PolicyState::default();
    for (index, step) in steps.into_iter().enumerate() {
        // The group keeps consuming between polls: every offset moves on, so nothing stalls.
        let progress = index as i64 * 1000;
        let offsets: Vec<_> = step
            .offsets
            .iter()
            .map(|p| PartitionOffsets {
                committed: p.committed.map(|c| c + progress),
                log_end: p.log_end + progress,
                ..*p
            })
            .collect();
        let decision = decide(
            config,
            &mut state,
            &offsets,
            step.current,
            origin + Duration::from_secs(step.at_secs),
        );
        assert_eq!(
            (decision.desired, decision.reason),
            (step.desired, step.reason),
            "step {index} at {}s: {}",
            step.at_secs,
            decision.message
        );
    }
}

fn step(
    at_secs: u64,
    offsets: Vec<PartitionOffsets>,
    current: u32,
    desired: u32,
    reason: Reason,
) -> Step {
    Step {
        at_secs,
        offsets,
        current,
        desired,
        reason,
    }
}

#[test]
fn lag_between_p_and_p_plus_one_thresholds_never_asks_for_p_plus_one_replicas() {
    // KEDA #4483: integer division let lag in [P·T+1, (P+1)·T−1] escape the cap.
    let cases = [
        (1201, 12),
        (1250, 12),
        (1299, 12),
        (5_000_000, 12),
        (1200, 12),
        (1199, 12),
    ];
    for (lag, expected) in cases {
        let decision = first_decision(&config(1, 50, 100), &even_lag(12, lag), 1);
        assert_eq!(decision.desired, expected, "lag {lag}");
    }
}

#[test]
fn lag_just_above_p_minus_one_thresholds_reaches_every_partition() {
    // KEDA #2908/#4791: the HPA's 10 % tolerance kept the count at P−1 forever.
    run(
        &config(1, 50, 100),
        vec![
            step(0, even_lag(12, 1101), 11, 12, Reason::ScaledUp),
            step(10, even_lag(12, 1150), 12, 12, Reason::Steady),
        ],
    );
}

#[test]
fn max_replicas_below_partitions_caps_the_count() {
    let decision = first_decision(&config(1, 4, 100), &even_lag(12, 10_000), 1);
    assert_eq!((decision.desired, decision.reason), (4, Reason::ScaledUp));
}

#[test]
fn partitions_without_commits_count_only_what_they_retain() {
    // KEDA #2612/#7936: a new group on an idle topic whose history was deleted by retention.
    let idle_history: Vec<_> = (0..12).map(|p| offsets(p, None, 50_000, 50_000)).collect();
    // One caller polling twice: the second poll sees the state the first left.
    let mut state = PolicyState::default();
    let mut poll = |offsets: &[PartitionOffsets]| {
        decide(&config(1, 12, 100), &mut state, offsets, 1, Instant::now())
    };
    let decision = poll(&idle_history);
    assert_eq!(decision.total_lag, 0);
    assert_eq!((decision.desired, decision.reason), (1, Reason::Steady));

    let retained: Vec<_> = (0..12).map(|p| offsets(p, None, 50_000, 50_050)).collect();
    let decision = poll(&retained);
    assert_eq!(decision.total_lag, 600);
    assert_eq!(decision.desired, 6);
    assert!(decision
        .partitions
        .iter()
        .all(|p| p.status == PartitionStatus::Lagging && p.lag == 50));
}

#[test]
fn committed_offset_behind_retention_counts_only_retained_records() {
    let behind = offsets(0, Some(10), 900, 1000);
    assert_eq!(behind.lag(), 100);
    let ahead = offsets(0, Some(1200), 0, 1000);
    assert_eq!(ahead.lag(), 0);
}

#[test]
fn lag_flapping_around_a_threshold_does_not_flap_replicas() {
    // KEDA #1482: up at once, but down only after the window, so 3→2→3→2 stays at 3.
    run(
        &config(1, 12, 100),
        vec![
            step(0, even_lag(12, 201), 2, 3, Reason::ScaledUp),
            step(10, even_lag(12, 199), 3, 3, Reason::ScaleDownDelayed),
            step(20, even_lag(12, 201), 3, 3, Reason::Steady),
            step(30, even_lag(12, 199), 3, 3, Reason::ScaleDownDelayed),
            step(40, even_lag(12, 201), 3, 3, Reason::Steady),
        ],
    );
}

#[test]
fn scale_down_waits_for_the_window_and_takes_its_highest_recommendation() {
    run(
        &config(1, 12, 100),
        vec![
            step(0, even_lag(12, 1000), 1, 10, Reason::ScaledUp),
            step(100, even_lag(12, 500), 10, 10, Reason::ScaleDownDelayed),
            step(200, even_lag(12, 100), 10, 10, Reason::ScaleDownDelayed),
            step(299, even_lag(12, 0), 10, 10, Reason::ScaleDownDelayed),
            // The 10 of t=0 left the window; the highest left is the 5 of t=100.
            step(300, even_lag(12, 0), 10, 5, Reason::ScaledDown),
            step(400, even_lag(12, 0), 5, 1, Reason::ScaledDown),
        ],
    );
}

#[test]
fn a_restarted_caller_does_not_scale_down_before_a_full_window() {
    run(
        &config(1, 12, 100),
        vec![
            step(0, even_lag(12, 0), 6, 6, Reason::ScaleDownDelayed),
            step(299, even_lag(12, 0), 6, 6, Reason::ScaleDownDelayed),
            step(300, even_lag(12, 0), 6, 1, Reason::ScaledDown),
        ],
    );
}

#[test]
fn scale_to_zero_waits_for_the_window_and_activation_brings_one_back_at_once() {
    let config = PolicyConfig {
        min_replicas: 0,
        scale_to_zero: true,
        activation_lag: 10,
        ..config(0, 12, 100)
    };
    run(
        &config,
        vec![
            step(0, even_lag(12, 0), 1, 1, Reason::ScaleDownDelayed),
            step(300, even_lag(12, 0), 1, 0, Reason::ScaledToZero),
            // Lag at or under the activation lag keeps the pool at zero.
            step(310, even_lag(12, 10), 0, 0, Reason::Steady),
            step(320, even_lag(12, 11), 0, 1, Reason::Activated),
            step(330, even_lag(12, 450), 1, 5, Reason::ScaledUp),
        ],
    );
}

#[test]
fn a_partition_stuck_with_lag_is_reported_stalled_and_not_scaled_for() {
    // Partition 0 holds a poison event: its committed offset never moves while lag grows.
    let poll = |stuck_end: i64, moving_committed: i64| {
        vec![
            offsets(0, Some(100), 0, stuck_end),
            offsets(1, Some(moving_committed), 0, moving_committed),
        ]
    };
    let config = config(1, 2, 100);
    let origin = Instant::now();
    let mut state = PolicyState::default();
    let mut statuses = Vec::new();
    let mut desired = Vec::new();
    for (poll_index, end) in [1000, 1100, 1200, 1300].into_iter().enumerate() {
        let decision = decide(
            &config,
            &mut state,
            &poll(end, 500 + poll_index as i64 * 10),
            2,
            origin + Duration::from_secs(10 * poll_index as u64),
        );
        statuses.push(decision.partitions[0].status);
        desired.push(decision.recommendation);
        assert_eq!(decision.partitions[1].status, PartitionStatus::Ok);
        assert_eq!(decision.total_lag, (end - 100) as u64);
    }
    assert_eq!(
        statuses,
        [
            PartitionStatus::Ok,
            PartitionStatus::Lagging,
            PartitionStatus::Lagging,
            PartitionStatus::Stalled
        ]
    );
    assert_eq!(desired, [2, 2, 2, 1]);
}

#[test]
fn an_empty_partition_list_keeps_replicas() {
    let decision = first_decision(&config(1, 12, 100), &[], 3);
    assert_eq!(
        (decision.desired, decision.reason),
        (3, Reason::NoPartitions)
    );
}

#[test]
fn a_group_at_zero_has_its_committed_offsets_kept_every_keepalive_and_only_then() {
    use wapipe_operator::scaling::{offsets_to_keep, OFFSET_KEEPALIVE};
    let now = Instant::now();
    let offsets = vec![offsets(0, Some(5), 0, 5), offsets(1, None, 0, 0)];
    // Never kept yet: keep what is committed (a partition without a commit has nothing to keep).
    assert_eq!(
        offsets_to_keep(0, 0, None, now, &offsets),
        Some(vec![(0, 5)])
    );
    // Kept recently: not again until the keep-alive has passed.
    assert_eq!(offsets_to_keep(0, 0, Some(now), now, &offsets), None);
    let later = now + OFFSET_KEEPALIVE;
    assert_eq!(
        offsets_to_keep(0, 0, Some(now), later, &offsets),
        Some(vec![(0, 5)])
    );
    // Workers running or about to: the group commits for itself (and Kafka refuses others).
    assert_eq!(offsets_to_keep(1, 0, None, now, &offsets), None);
    assert_eq!(offsets_to_keep(0, 1, None, now, &offsets), None);
    // Nothing committed at all: nothing to keep.
    assert_eq!(offsets_to_keep(0, 0, None, now, &offsets[1..]), None);
}
