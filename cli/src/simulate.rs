//! `wapipe simulate`: a day of WhatsApp traffic through the operator's own scaling policy
//! (`scaler::policy::decide`, as shipped) and through KEDA's Kafka scaler driving an HPA, on the
//! same trace, in discrete one-second steps. Deterministic for a seed.
//!
//! The model: arrivals from a trace are spread over users drawn from a Zipf distribution (one
//! key may be made hot), users map to partitions by hash; each ready worker replica serves
//! `per_replica` events/s shared over the partitions assigned to it (round robin); a new replica
//! is ready after `start_delay`; every change of the ready count pauses consumption for
//! `rebalance_pause`; during a sink outage nothing is served, and a sink with a capacity limit
//! serves at most that many events/s whatever the replica count. Lag is what was produced and
//! not yet consumed. A partition's end-to-end latency is its backlog divided by its current
//! service rate (infinite while nothing serves it); its delay is the age of its oldest
//! unconsumed event, which wapipe's policy is given as the operator reads it from Kafka.
//!
//! wapipe runs twice: on offset lag alone, and with a delay target (`--max-delay`).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use wapipe_operator::scaler::policy::{
    decide_timed, PartitionOffsets, PolicyConfig, PolicyState, Reason,
};

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Traces to run, comma-separated (all when absent).
    #[arg(long, value_delimiter = ',', value_parser = trace_names())]
    pub traces: Vec<String>,
    /// Mean arrival rate, events/s (1,000/s is 86 million events a day).
    #[arg(long, default_value_t = 1000.0)]
    pub mean_rate: f64,
    /// Events/s one worker replica serves (the worker benchmark on Kafka, PostgreSQL sink).
    #[arg(long, default_value_t = 8285.0)]
    pub per_replica: f64,
    /// Partitions of the raw topic.
    #[arg(long, default_value_t = 12)]
    pub partitions: usize,
    #[arg(long, default_value_t = 1)]
    pub min_replicas: u32,
    #[arg(long, default_value_t = 12)]
    pub max_replicas: u32,
    /// wapipe's lagPerReplica, and KEDA's lagThreshold, so both aim at the same backlog.
    #[arg(long, default_value_t = 1000)]
    pub lag_per_replica: u64,
    /// wapipe's pollIntervalSeconds.
    #[arg(long, default_value_t = 10)]
    pub poll_seconds: u64,
    /// wapipe's scaleDownWindowSeconds (KEDA's HPA keeps its default 300 s).
    #[arg(long, default_value_t = 300)]
    pub window_seconds: u64,
    /// Seconds from a replica being asked for to it consuming.
    #[arg(long, default_value_t = 20)]
    pub start_delay: u64,
    /// Seconds the group stops consuming when its membership changes.
    #[arg(long, default_value_t = 5)]
    pub rebalance_pause: u64,
    /// End-to-end latency objective, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub slo: f64,
    /// The delay target (maxDelaySeconds) of wapipe's second run.
    #[arg(long, default_value_t = 5)]
    pub max_delay: u64,
    /// Distinct users; their traffic follows Zipf(1.1).
    #[arg(long, default_value_t = 100_000)]
    pub users: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Where the time series (CSV, one per trace) go; plots come from scripts/plot_simulation.py.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Print the capacity helper's recommendation for this peak rate (events/s) and stop.
    #[arg(long)]
    pub plan_peak: Option<f64>,
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
}

/// The names `--traces` accepts, listed by `--help` and checked by clap.
fn trace_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(traces().into_iter().map(|t| t.name))
}

/// A named arrival-rate curve and what happens to the sink.
#[derive(Debug, Clone)]
pub struct Trace {
    pub name: &'static str,
    pub seconds: u64,
    /// Share of all traffic on one user (the hot key), if any.
    pub hot_share: Option<f64>,
    /// Seconds during which the sink is down.
    pub outage: Option<(u64, u64)>,
    /// Override of the partition count (more consumers wanted than partitions).
    pub partitions: Option<usize>,
    /// Most events/s the sink takes from all replicas together, as replicas' worth.
    pub sink_capacity: Option<f64>,
    /// Override of lagPerReplica (and KEDA's lagThreshold).
    pub lag_per_replica: Option<u64>,
    /// Events/s at second `t`, as a multiple of the mean.
    pub shape: fn(u64) -> f64,
}

const DAY: u64 = 86_400;

fn diurnal(t: u64) -> f64 {
    // Mean 1, peak 3× at 14:00 and a night trough: 1 + 2·cos over the day, floored.
    let phase = (t as f64 / DAY as f64 - 14.0 / 24.0) * std::f64::consts::TAU;
    (1.0 + 2.0 * phase.cos()).max(0.2) / 1.2
}

fn broadcast(t: u64) -> f64 {
    let base = diurnal(t);
    // A marketing broadcast at 10:00: 50× the mean for five minutes.
    if (36_000..36_300).contains(&t) {
        base + 50.0
    } else {
        base
    }
}

fn outage(t: u64) -> f64 {
    let base = diurnal(t);
    // After the 30-minute sink outage at 09:00 the provider's retries add 30 % for 10 minutes.
    if (34_200..34_800).contains(&t) {
        base * 1.3
    } else {
        base
    }
}

fn ramp(t: u64) -> f64 {
    // From 08:00 a rise to 36× the mean by 12:00 and back by 16:00, over the diurnal day.
    let (from, peak, to) = (28_800.0, 43_200.0, 57_600.0);
    let t = t as f64;
    let extra = if t <= from || t >= to {
        0.0
    } else if t <= peak {
        (t - from) / (peak - from)
    } else {
        (to - t) / (to - peak)
    };
    diurnal(t as u64) + 36.0 * extra
}

/// A trace over a plain day: no hot user, no outage, the usual partitions and sink.
const fn plain(name: &'static str, shape: fn(u64) -> f64) -> Trace {
    Trace {
        name,
        seconds: DAY,
        hot_share: None,
        outage: None,
        partitions: None,
        sink_capacity: None,
        lag_per_replica: None,
        shape,
    }
}

pub fn traces() -> Vec<Trace> {
    vec![
        plain("diurnal", diurnal),
        plain("broadcast", broadcast),
        Trace {
            outage: Some((32_400, 34_200)),
            ..plain("outage", outage)
        },
        Trace {
            hot_share: Some(0.2),
            ..plain("hot-user", broadcast)
        },
        Trace {
            partitions: Some(3),
            ..plain("few-partitions", broadcast)
        },
        // A slow rise where a threshold high enough not to flap over the day (100,000 offsets,
        // 12 s of one replica's work) reacts late: the delay target reacts to the arrival rate.
        Trace {
            lag_per_replica: Some(100_000),
            ..plain("ramp", ramp)
        },
        // The same rise into a database that takes three replicas' worth and no more.
        Trace {
            sink_capacity: Some(3.0),
            lag_per_replica: Some(100_000),
            ..plain("saturated-sink", ramp)
        },
    ]
}

/// A small deterministic generator (SplitMix64): the same seed, the same day.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Each partition's share of the traffic: Zipf(1.1) users hashed onto partitions, one user made
/// hot with `hot_share` of everything if asked.
pub fn partition_shares(
    partitions: usize,
    users: usize,
    hot_share: Option<f64>,
    seed: u64,
) -> Vec<f64> {
    let mut rng = Rng(seed);
    let mut shares = vec![0.0; partitions];
    let weights: Vec<f64> = (1..=users)
        .map(|rank| 1.0 / (rank as f64).powf(1.1))
        .collect();
    let total: f64 = weights.iter().sum();
    for weight in &weights {
        let partition = (rng.next_u64() % partitions as u64) as usize;
        shares[partition] += weight / total;
    }
    if let Some(hot) = hot_share {
        for share in &mut shares {
            *share *= 1.0 - hot;
        }
        shares[(rng.next_u64() % partitions as u64) as usize] += hot;
    }
    shares
}

/// Which controller sets the replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// wapipe's policy on offset lag (no delay target).
    Wapipe,
    /// wapipe's policy with the delay target `--max-delay`.
    WapipeDelay,
    Keda,
}

impl Controller {
    pub fn as_str(self) -> &'static str {
        match self {
            Controller::Wapipe => "wapipe",
            Controller::WapipeDelay => "wapipe, delay target",
            Controller::Keda => "KEDA + HPA",
        }
    }
}

/// KEDA's Kafka scaler (lag ÷ threshold, the partition cap applied with integer division before
/// the ceiling, 1 per uncommitted partition under `latest`) and the HPA's defaults (15 s sync,
/// 10 % tolerance, scale-up max(+4, +100 %) per 15 s, 300 s scale-down stabilisation on the
/// highest recommendation).
struct Keda {
    threshold: u64,
    partitions: u64,
    min: u32,
    max: u32,
    recommendations: VecDeque<(u64, u32)>,
}

impl Keda {
    fn decide(&mut self, t: u64, lags: &[Option<u64>], current: u32) -> u32 {
        let mut total: u64 = lags.iter().map(|lag| lag.unwrap_or(1)).sum();
        if total / self.threshold > self.partitions {
            total = self.partitions * self.threshold;
        }
        let current = current.max(1);
        let ratio = total as f64 / (self.threshold as f64 * f64::from(current));
        let raw = if (1.0 - ratio).abs() > 0.1 {
            u32::try_from(total.div_ceil(self.threshold)).unwrap_or(u32::MAX)
        } else {
            current
        };
        let recommended = raw.clamp(self.min.max(1), self.max);
        self.recommendations.push_back((t, recommended));
        while self
            .recommendations
            .front()
            .is_some_and(|(at, _)| t - at > 300)
        {
            self.recommendations.pop_front();
        }
        let stabilised = if recommended < current {
            self.recommendations
                .iter()
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(recommended)
                .min(current)
        } else {
            recommended
        };
        let up_limit = (current + 4).max(current * 2);
        stabilised.min(up_limit)
    }
}

/// One second of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: u64,
    pub arrival: f64,
    pub lag: f64,
    pub desired: u32,
    pub ready: u32,
    pub latency: f64,
    /// Age of the oldest unconsumed event over every partition, seconds.
    pub delay: u64,
}

/// What one controller did on one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub peak_lag: f64,
    /// Seconds from the peak of each backlog episode until lag is back under a second of
    /// traffic; the longest.
    pub longest_drain: u64,
    pub seconds_over_slo: u64,
    pub replica_minutes: f64,
    pub scaling_actions: u32,
    pub worst_partition: usize,
    pub worst_partition_peak_lag: f64,
    /// The oldest any unconsumed event got, seconds.
    pub peak_delay: u64,
    pub max_replicas: u32,
    /// Polls at which wapipe held a scale-up for a saturated sink.
    pub held_polls: u32,
    pub samples: Vec<Sample>,
}

pub struct Model<'a> {
    pub args: &'a SimulateArgs,
    pub trace: &'a Trace,
}

impl Model<'_> {
    fn partitions(&self) -> usize {
        self.trace.partitions.unwrap_or(self.args.partitions)
    }

    fn lag_per_replica(&self) -> u64 {
        self.trace
            .lag_per_replica
            .unwrap_or(self.args.lag_per_replica)
    }

    pub fn run(&self, controller: Controller) -> Outcome {
        let args = self.args;
        let partitions = self.partitions();
        let shares = partition_shares(partitions, args.users, self.trace.hot_share, args.seed);
        let mut rng = Rng(args.seed ^ 0xA5A5);
        let mut produced = vec![0.0f64; partitions];
        // Events produced to each partition by the end of each second: the age of a partition's
        // oldest unconsumed event is how long ago its count passed what was consumed.
        let mut produced_by_second: Vec<Vec<f64>> =
            vec![Vec::with_capacity(self.trace.seconds as usize); partitions];
        let sink_capacity = self.trace.sink_capacity.map(|c| c * args.per_replica);
        let mut held_polls = 0;
        let mut consumed = vec![0.0f64; partitions];
        let mut committed_once = vec![false; partitions];
        let mut peak_partition = vec![0.0f64; partitions];
        let min = args.min_replicas;
        let max = args.max_replicas;
        let lag_per_replica = self.lag_per_replica();
        let policy = PolicyConfig {
            min_replicas: min,
            max_replicas: max,
            lag_per_replica,
            scale_down_window: Duration::from_secs(args.window_seconds),
            scale_to_zero: min == 0,
            max_delay: (controller == Controller::WapipeDelay)
                .then(|| Duration::from_secs(args.max_delay.max(1))),
            ..PolicyConfig::default()
        };
        let mut state = PolicyState::default();
        let mut keda = Keda {
            threshold: lag_per_replica,
            partitions: partitions as u64,
            min,
            max,
            recommendations: VecDeque::new(),
        };
        let origin = Instant::now();
        let mut desired = min.max(1);
        // Seconds at which replicas asked for become ready (one entry per pending replica).
        let mut starting: VecDeque<u64> = VecDeque::new();
        let mut ready = desired;
        let mut paused_until = 0u64;
        let mut samples = Vec::with_capacity(self.trace.seconds as usize);
        let mut actions = 0;
        let mut replica_seconds = 0.0;
        let mut seconds_over = 0;
        let interval = match controller {
            Controller::Wapipe | Controller::WapipeDelay => args.poll_seconds.max(1),
            Controller::Keda => 15,
        };
        for t in 0..self.trace.seconds {
            // Arrivals, with ±10 % noise per second.
            let noise = 0.9 + 0.2 * rng.unit();
            let arrival = args.mean_rate * (self.trace.shape)(t) * noise;
            for (p, share) in shares.iter().enumerate() {
                produced[p] += arrival * share;
                produced_by_second[p].push(produced[p]);
            }
            // Replicas that finished starting; a change of membership pauses the group.
            while starting.front().is_some_and(|at| *at <= t) {
                starting.pop_front();
                ready += 1;
                paused_until = t + args.rebalance_pause;
            }
            let sink_down = self
                .trace
                .outage
                .is_some_and(|(from, to)| (from..to).contains(&t));
            let mut rates = vec![0.0f64; partitions];
            if ready > 0 && t >= paused_until && !sink_down {
                // A sink at its limit shares it over the replicas writing to it.
                let per_replica = sink_capacity.map_or(args.per_replica, |c| {
                    args.per_replica.min(c / f64::from(ready))
                });
                // Round robin: partition p belongs to replica p % ready; a replica's capacity is
                // shared by its partitions that have a backlog, unused share passed on.
                for replica in 0..ready as usize {
                    let mine: Vec<usize> = (replica..partitions).step_by(ready as usize).collect();
                    let mut capacity = per_replica;
                    let mut waiting: Vec<usize> = mine
                        .iter()
                        .copied()
                        .filter(|&p| produced[p] - consumed[p] > 1e-9)
                        .collect();
                    while capacity > 1e-9 && !waiting.is_empty() {
                        let each = capacity / waiting.len() as f64;
                        let mut next = Vec::new();
                        for p in waiting {
                            let take = (produced[p] - consumed[p]).min(each);
                            consumed[p] += take;
                            rates[p] += take;
                            capacity -= take;
                            committed_once[p] = true;
                            if produced[p] - consumed[p] > 1e-9 {
                                next.push(p);
                            }
                        }
                        waiting = next;
                    }
                }
            }
            let lags: Vec<f64> = (0..partitions)
                .map(|p| (produced[p] - consumed[p]).max(0.0))
                .collect();
            for (p, lag) in lags.iter().enumerate() {
                peak_partition[p] = peak_partition[p].max(*lag);
            }
            let latency = lags
                .iter()
                .zip(&rates)
                .map(|(lag, rate)| {
                    if *lag < 1.0 {
                        0.0
                    } else if *rate <= 1e-9 {
                        f64::INFINITY
                    } else {
                        lag / rate
                    }
                })
                .fold(0.0, f64::max);
            if latency > args.slo {
                seconds_over += 1;
            }
            let ages: BTreeMap<i32, Duration> = (0..partitions)
                .filter(|&p| lags[p] >= 1.0)
                .map(|p| {
                    let history = &produced_by_second[p];
                    let since = history.partition_point(|&n| n <= consumed[p]) as u64;
                    (p as i32, Duration::from_secs(t.saturating_sub(since)))
                })
                .collect();
            let delay = ages.values().max().map_or(0, Duration::as_secs);
            // The controller, on its own schedule.
            if t % interval == 0 {
                let running = ready + starting.len() as u32;
                let target = match controller {
                    Controller::Wapipe | Controller::WapipeDelay => {
                        let offsets: Vec<PartitionOffsets> = (0..partitions)
                            .map(|p| PartitionOffsets {
                                partition: p as i32,
                                committed: committed_once[p].then_some(consumed[p].floor() as i64),
                                log_start: 0,
                                log_end: produced[p].floor() as i64,
                            })
                            .collect();
                        let decision = decide_timed(
                            &policy,
                            &mut state,
                            &offsets,
                            &ages,
                            running,
                            origin + Duration::from_secs(t),
                        );
                        if decision.reason == Reason::SinkSaturated {
                            held_polls += 1;
                        }
                        decision.desired
                    }
                    Controller::Keda => {
                        let lags: Vec<Option<u64>> = (0..partitions)
                            .map(|p| committed_once[p].then_some(lags[p].floor() as u64))
                            .collect();
                        keda.decide(t, &lags, running)
                    }
                };
                if target != desired {
                    actions += 1;
                    desired = target;
                }
                // Grow by starting replicas; shrink at once (newest first), which rebalances.
                while running_count(ready, &starting) < desired {
                    starting.push_back(t + args.start_delay);
                }
                while running_count(ready, &starting) > desired {
                    if starting.pop_back().is_none() {
                        ready -= 1;
                        paused_until = t + args.rebalance_pause;
                    }
                }
            }
            replica_seconds += f64::from(running_count(ready, &starting));
            samples.push(Sample {
                t,
                arrival,
                lag: lags.iter().sum(),
                desired,
                ready,
                latency,
                delay,
            });
        }
        let (worst_partition, worst_partition_peak_lag) = peak_partition
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, 0.0),
                |best, (p, lag)| if lag > best.1 { (p, lag) } else { best },
            );
        Outcome {
            peak_lag: samples.iter().map(|s| s.lag).fold(0.0, f64::max),
            longest_drain: longest_drain(&samples),
            seconds_over_slo: seconds_over,
            replica_minutes: replica_seconds / 60.0,
            scaling_actions: actions,
            worst_partition,
            worst_partition_peak_lag,
            peak_delay: samples.iter().map(|s| s.delay).max().unwrap_or(0),
            max_replicas: samples.iter().map(|s| s.desired).max().unwrap_or(0),
            held_polls,
            samples,
        }
    }
}

fn running_count(ready: u32, starting: &VecDeque<u64>) -> u32 {
    ready + starting.len() as u32
}

/// The longest time from the peak of a backlog episode until lag is under one second of
/// arrivals again (an episode: lag above one second of arrivals).
fn longest_drain(samples: &[Sample]) -> u64 {
    let mut longest = 0;
    let mut peak: Option<(u64, f64)> = None;
    for s in samples {
        let backlogged = s.lag > s.arrival.max(1.0);
        match (&mut peak, backlogged) {
            (None, true) => peak = Some((s.t, s.lag)),
            (Some(p), true) if s.lag >= p.1 => *p = (s.t, s.lag),
            (Some((at, _)), false) => {
                longest = longest.max(s.t - *at);
                peak = None;
            }
            _ => {}
        }
    }
    if let (Some((at, _)), Some(last)) = (peak, samples.last()) {
        longest = longest.max(last.t - at);
    }
    longest
}

/// The capacity helper: partitions, lagPerReplica, maxReplicas and window for a peak rate.
/// The capacity helper's recommendation for a peak rate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub peak: f64,
    pub per_replica: f64,
    pub slo_seconds: f64,
    /// Workers at the peak, with 30 % headroom.
    pub replicas: u64,
    /// Partitions: the ceiling on workers.
    pub partitions: u64,
    pub lag_per_replica: u64,
    /// Events/s the busiest user alone sends at the peak.
    pub busiest_user_rate: f64,
    /// That user's rate is more than one worker serves (per-user order keeps them on one).
    pub busiest_user_exceeds_a_worker: bool,
}

pub fn capacity_plan(peak: f64, per_replica: f64, slo: f64, top_key_share: f64) -> Plan {
    // Enough replicas for the peak with 30 % headroom; one partition per replica at the peak,
    // rounded up to a multiple of 6 so replicas divide partitions evenly more often.
    let replicas = ((peak * 1.3) / per_replica).ceil().max(1.0) as u64;
    Plan {
        peak,
        per_replica,
        slo_seconds: slo,
        replicas,
        partitions: replicas.div_ceil(6) * 6,
        // A replica's backlog should drain within half the objective.
        lag_per_replica: ((per_replica * slo / 2.0).floor() as u64).max(1),
        busiest_user_rate: top_key_share * peak,
        busiest_user_exceeds_a_worker: top_key_share * peak > per_replica,
    }
}

pub fn plan(peak: f64, per_replica: f64, slo: f64, top_key_share: f64) -> String {
    let Plan {
        replicas,
        partitions,
        lag_per_replica,
        busiest_user_rate,
        busiest_user_exceeds_a_worker,
        ..
    } = capacity_plan(peak, per_replica, slo, top_key_share);
    let mut out = String::new();
    let _ = writeln!(out, "# Capacity for a peak of {peak:.0} events/s at {per_replica:.0} events/s per worker and a {slo} s objective:");
    let _ = writeln!(out, "# {replicas} worker(s) at the peak (30 % headroom), {partitions} partitions (the ceiling on workers).");
    if busiest_user_exceeds_a_worker {
        let _ = writeln!(
            out,
            "# Warning: the busiest user alone sends {:.0} events/s at the peak ({:.1} % of traffic), more than one \
             worker serves; per-user order keeps that user on one partition and one worker, whatever the count.",
            busiest_user_rate,
            top_key_share * 100.0
        );
    }
    let _ = writeln!(out, "spec:\n  topic:\n    partitions: {partitions}\n  worker:\n    minReplicas: 1\n    maxReplicas: {partitions}\n    lagPerReplica: {lag_per_replica}\n    pollIntervalSeconds: 10\n    scaleDownWindowSeconds: 300");
    out
}

/// One trace's outcomes as `wapipe simulate -o json` prints them.
pub fn trace_json(trace: &Trace, results: &[(Controller, Outcome)]) -> serde_json::Value {
    let controllers: Vec<serde_json::Value> = results
        .iter()
        .map(|(controller, o)| {
            serde_json::json!({
                "controller": controller.as_str(),
                "peakLag": o.peak_lag.round(),
                "peakDelaySeconds": o.peak_delay,
                "longestDrainSeconds": o.longest_drain,
                "secondsOverSlo": o.seconds_over_slo,
                "replicaMinutes": o.replica_minutes.round(),
                "mostReplicas": o.max_replicas,
                "scalingActions": o.scaling_actions,
                "pollsHeldSinkSaturated": (*controller != Controller::Keda).then_some(o.held_polls),
                "worstPartition": o.worst_partition,
                "worstPartitionPeakLag": o.worst_partition_peak_lag.round(),
            })
        })
        .collect();
    serde_json::json!({"trace": trace.name, "seconds": trace.seconds, "controllers": controllers})
}

pub fn table(trace: &Trace, results: &[(Controller, Outcome)], slo: f64) -> String {
    let mut out = String::new();
    let mut notes = Vec::new();
    if let Some(h) = trace.hot_share {
        notes.push(format!("one user holds {:.0} % of traffic", h * 100.0));
    }
    if let Some((a, b)) = trace.outage {
        notes.push(format!("sink down {a}–{b} s"));
    }
    if let Some(p) = trace.partitions {
        notes.push(format!("{p} partitions"));
    }
    if let Some(c) = trace.sink_capacity {
        notes.push(format!("sink takes {c} replicas' worth at most"));
    }
    if let Some(l) = trace.lag_per_replica {
        notes.push(format!("lagPerReplica and lagThreshold {l}"));
    }
    let _ = writeln!(
        out,
        "\n{} ({} s{})",
        trace.name,
        trace.seconds,
        notes.iter().map(|n| format!(", {n}")).collect::<String>()
    );
    let _ = writeln!(out, "| controller | peak lag | peak delay | longest drain | s over {slo} s SLO | replica-minutes | most replicas | scaling actions | polls held (SinkSaturated) | worst partition (peak lag) |");
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for (controller, o) in results {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} s | {} s | {} | {:.0} | {} | {} | {} | {} ({:.0}) |",
            controller.as_str(),
            o.peak_lag,
            o.peak_delay,
            o.longest_drain,
            o.seconds_over_slo,
            o.replica_minutes,
            o.max_replicas,
            o.scaling_actions,
            if *controller == Controller::Keda {
                "-".to_string()
            } else {
                o.held_polls.to_string()
            },
            o.worst_partition,
            o.worst_partition_peak_lag
        );
    }
    out
}

pub fn simulate(args: &SimulateArgs) -> anyhow::Result<()> {
    if let Some(peak) = args.plan_peak {
        let weights: f64 = (1..=args.users)
            .map(|rank| 1.0 / (rank as f64).powf(1.1))
            .sum();
        if args.output.json() {
            let plan = capacity_plan(peak, args.per_replica, args.slo, 1.0 / weights);
            crate::output::print_json(&serde_json::to_value(plan)?)?;
        } else {
            print!("{}", plan(peak, args.per_replica, args.slo, 1.0 / weights));
        }
        return Ok(());
    }
    let chosen: Vec<Trace> = traces()
        .into_iter()
        .filter(|t| args.traces.is_empty() || args.traces.iter().any(|n| n == t.name))
        .collect();
    if chosen.is_empty() {
        anyhow::bail!(
            "no such trace; choose from diurnal, broadcast, outage, hot-user, few-partitions, \
             ramp, saturated-sink"
        );
    }
    let json = args.output.json();
    let mut runs = Vec::new();
    if !json {
        println!(
        "mean {:.0} events/s, {:.0} events/s per replica, {} partitions, replicas {}..{}, lag per replica {}, delay target {} s, poll {} s, window {} s, start delay {} s, rebalance pause {} s, seed {}",
        args.mean_rate, args.per_replica, args.partitions, args.min_replicas, args.max_replicas, args.lag_per_replica,
        args.max_delay, args.poll_seconds, args.window_seconds, args.start_delay, args.rebalance_pause, args.seed
    );
    }
    for trace in &chosen {
        let results = run_all(args, trace);
        if json {
            runs.push(trace_json(trace, &results));
        } else {
            print!("{}", table(trace, &results, args.slo));
        }
        if let Some(dir) = &args.out_dir {
            std::fs::create_dir_all(dir)?;
            let mut csv = String::from("t,arrival,wapipe_lag,wapipe_desired,wapipe_ready,keda_lag,keda_desired,keda_ready,delay_lag,delay_desired,delay_ready,wapipe_delay,keda_delay,delay_delay\n");
            let (w, d, k) = (
                &results[0].1.samples,
                &results[1].1.samples,
                &results[2].1.samples,
            );
            for ((a, b), c) in w.iter().zip(k).zip(d) {
                let _ = writeln!(
                    csv,
                    "{},{:.1},{:.1},{},{},{:.1},{},{},{:.1},{},{},{},{},{}",
                    a.t,
                    a.arrival,
                    a.lag,
                    a.desired,
                    a.ready,
                    b.lag,
                    b.desired,
                    b.ready,
                    c.lag,
                    c.desired,
                    c.ready,
                    a.delay,
                    b.delay,
                    c.delay
                );
            }
            std::fs::write(dir.join(format!("{}.csv", trace.name)), csv)?;
        }
    }
    if json {
        crate::output::print_json(&serde_json::json!({
            "settings": {
                "meanRate": args.mean_rate,
                "perReplica": args.per_replica,
                "partitions": args.partitions,
                "minReplicas": args.min_replicas,
                "maxReplicas": args.max_replicas,
                "lagPerReplica": args.lag_per_replica,
                "maxDelaySeconds": args.max_delay,
                "pollSeconds": args.poll_seconds,
                "windowSeconds": args.window_seconds,
                "startDelaySeconds": args.start_delay,
                "rebalancePauseSeconds": args.rebalance_pause,
                "sloSeconds": args.slo,
                "seed": args.seed,
            },
            "traces": runs,
        }))?;
    }
    Ok(())
}

/// Every controller on one trace: wapipe, wapipe with the delay target, KEDA.
pub fn run_all(args: &SimulateArgs, trace: &Trace) -> Vec<(Controller, Outcome)> {
    let model = Model { args, trace };
    [
        Controller::Wapipe,
        Controller::WapipeDelay,
        Controller::Keda,
    ]
    .into_iter()
    .map(|c| (c, model.run(c)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn args(extra: &[&str]) -> SimulateArgs {
        let mut argv = vec!["simulate"];
        argv.extend_from_slice(extra);
        Wrap::parse_from(argv).args
    }

    fn short(trace: &str) -> Trace {
        // Two hours around the interesting part of each trace, to keep the tests quick.
        let mut t = traces().into_iter().find(|t| t.name == trace).unwrap();
        t.seconds = 40_000;
        t
    }

    #[test]
    fn replicas_stay_within_bounds_and_lag_is_never_negative() {
        for name in ["broadcast", "outage", "hot-user", "few-partitions"] {
            let a = args(&["--min-replicas", "1", "--max-replicas", "8"]);
            let trace = short(name);
            let partitions = trace.partitions.unwrap_or(a.partitions) as u32;
            for (controller, outcome) in run_all(&a, &trace) {
                for s in &outcome.samples {
                    assert!(s.lag >= 0.0, "{name} {controller:?}: lag {}", s.lag);
                    assert!(
                        s.desired >= 1 && s.desired <= 8,
                        "{name} {controller:?}: {}",
                        s.desired
                    );
                    assert!(s.ready <= 8, "{name} {controller:?}: ready {}", s.ready);
                    if controller != Controller::Keda {
                        assert!(
                            s.desired <= partitions,
                            "{name}: wapipe asked for {} > {partitions} partitions",
                            s.desired
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_same_trace_and_seed_give_the_same_table() {
        let a = args(&["--seed", "11"]);
        let trace = short("broadcast");
        let first = table(&trace, &run_all(&a, &trace), 5.0);
        assert_eq!(first, table(&trace, &run_all(&a, &trace), 5.0));
        let other = run_all(&args(&["--seed", "12"]), &trace);
        assert_ne!(other[0].1.samples, run_all(&a, &trace)[0].1.samples);
    }

    #[test]
    fn keda_asks_for_one_more_replica_than_partitions_and_wapipe_never_does() {
        // KEDA's integer-division cap lets lag in [P·T+1, (P+1)·T−1] through: P+1 replicas.
        let mut keda = Keda {
            threshold: 100,
            partitions: 3,
            min: 1,
            max: 10,
            recommendations: VecDeque::new(),
        };
        assert_eq!(keda.decide(0, &[Some(120), Some(120), Some(120)], 4), 4);
        let trace = short("few-partitions");
        let a = args(&["--max-replicas", "12"]);
        let outcomes = run_all(&a, &trace);
        assert!(outcomes[0].1.samples.iter().all(|s| s.desired <= 3));
    }

    #[test]
    fn the_hpa_tolerance_keeps_keda_one_short_of_the_cap() {
        // Capped metric P·T over (P−1)·T is within 10 % for P ≥ 11: the last replica never comes.
        let mut keda = Keda {
            threshold: 100,
            partitions: 12,
            min: 1,
            max: 20,
            recommendations: VecDeque::new(),
        };
        let lags: Vec<Option<u64>> = vec![Some(1000); 12];
        assert_eq!(keda.decide(0, &lags, 11), 11);
    }

    #[test]
    fn zipf_shares_sum_to_one_and_a_hot_user_dominates_its_partition() {
        let shares = partition_shares(12, 10_000, Some(0.2), 3);
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(shares.iter().copied().fold(0.0, f64::max) >= 0.2);
    }

    #[test]
    fn the_capacity_plan_has_a_partition_per_replica_at_the_peak_and_drains_within_the_slo() {
        let plan = plan(50_000.0, 8_000.0, 5.0, 0.01);
        assert!(!plan.contains("Warning"), "{plan}");
        assert!(super::plan(50_000.0, 8_000.0, 5.0, 0.2).contains("Warning"));
        // 50,000 × 1.3 / 8,000 = 8.1 → 9 replicas → 12 partitions.
        assert!(plan.contains("partitions: 12"), "{plan}");
        assert!(plan.contains("maxReplicas: 12"), "{plan}");
        assert!(plan.contains("lagPerReplica: 20000"), "{plan}");
        // `-o json` prints the same figures.
        let figures = serde_json::to_value(capacity_plan(50_000.0, 8_000.0, 5.0, 0.2)).unwrap();
        assert_eq!(figures["replicas"], 9);
        assert_eq!(figures["partitions"], 12);
        assert_eq!(figures["lagPerReplica"], 20_000);
        assert_eq!(figures["busiestUserRate"], 10_000.0);
        assert_eq!(figures["busiestUserExceedsAWorker"], true);
    }

    #[test]
    fn traces_are_checked_by_the_command_line_and_their_json_has_every_controller() {
        let err = Wrap::try_parse_from(["simulate", "--traces", "diurnal,nope"])
            .err()
            .expect("an unknown trace is refused");
        let message = err.to_string();
        assert!(message.contains("saturated-sink"), "{message}");
        let a = args(&["--traces", "broadcast", "-o", "json"]);
        assert!(a.output.json());
        let trace = short("broadcast");
        let json = trace_json(&trace, &run_all(&a, &trace));
        assert_eq!(json["trace"], "broadcast");
        let controllers: Vec<&str> = json["controllers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["controller"].as_str().unwrap())
            .collect();
        assert_eq!(controllers.len(), 3, "{json}");
        assert!(
            json["controllers"][0]["peakLag"].as_f64().unwrap() > 0.0,
            "{json}"
        );
        // KEDA has no saturated-sink hold: null rather than a misleading 0.
        let keda = json["controllers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["controller"] == Controller::Keda.as_str())
            .unwrap();
        assert!(keda["pollsHeldSinkSaturated"].is_null(), "{json}");
    }
}
