//! What the operator remembers about one pipeline between reconciles, held in one place per
//! pipeline uid: the scaler's history, the topics this process created, when each topic's
//! configuration was last found in place, the generation its Secrets were read for and its
//! failed attempts; the scaler's part also names the metric series it exported.
//!
//! A memory is forgotten, and its metric series with it, whenever its pipeline leaves: its
//! cleanup released it, it is gone from the controller's cache (a `Retain` pipeline has no
//! finalizer and simply disappears), or a pipeline of the same namespace and name with
//! another uid appears (a re-created pipeline starts with nothing of the old one's history).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;

use crate::crd::WhatsAppWebhookPipeline;
use crate::metrics::{Metrics, PipelineLabels};
use crate::scaling::ScalerMemory;
use crate::services::lock;
use crate::topic::TopicMemory;

/// One pipeline's memory.
#[derive(Debug, Default)]
pub(crate) struct PipelineMemory {
    pub scaler: ScalerMemory,
    pub topics: TopicMemory,
    /// The generation the pipeline's Secrets were last read for: a new one reads them again.
    pub secrets_read_for: Option<Option<i64>>,
}

struct Slot {
    namespace: String,
    name: String,
    failures: AtomicU32,
    memory: Arc<tokio::sync::Mutex<PipelineMemory>>,
}

/// Every pipeline's memory, by uid.
#[derive(Default)]
pub(crate) struct Memories {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Memories {
    /// The memory of `pipeline`, made empty if it has none. A memory held for another uid
    /// under the same namespace and name belongs to a pipeline that is gone: it is forgotten.
    pub fn of(
        &self,
        pipeline: &WhatsAppWebhookPipeline,
        metrics: &Metrics,
    ) -> Arc<tokio::sync::Mutex<PipelineMemory>> {
        let uid = pipeline.uid().unwrap_or_default();
        let namespace = pipeline.namespace().unwrap_or_default();
        let name = pipeline.name_any();
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(&uid) {
            return slot.memory.clone();
        }
        let replaced: Vec<String> = slots
            .iter()
            .filter(|(_, slot)| slot.namespace == namespace && slot.name == name)
            .map(|(uid, _)| uid.clone())
            .collect();
        for old in replaced {
            if let Some(slot) = slots.remove(&old) {
                forget_series(&slot, metrics);
            }
        }
        let memory = Arc::new(tokio::sync::Mutex::new(PipelineMemory::default()));
        slots.insert(
            uid,
            Slot {
                namespace,
                name,
                failures: AtomicU32::new(0),
                memory: memory.clone(),
            },
        );
        memory
    }

    /// Counts a failed reconcile of the pipeline `uid`; the number of failures in a row.
    pub fn failed(&self, uid: &str) -> u32 {
        lock(&self.slots).get(uid).map_or(1, |slot| {
            slot.failures
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1)
        })
    }

    /// A reconcile of `uid` succeeded: the next failure is the first again.
    pub fn succeeded(&self, uid: &str) {
        if let Some(slot) = lock(&self.slots).get(uid) {
            slot.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Forgets the pipeline `uid` and removes its metric series.
    pub fn forget(&self, uid: &str, metrics: &Metrics) {
        if let Some(slot) = lock(&self.slots).remove(uid) {
            forget_series(&slot, metrics);
        }
    }

    /// Forgets every pipeline whose uid is not in `present`.
    pub fn keep_only(&self, present: &BTreeSet<String>, metrics: &Metrics) {
        let mut slots = lock(&self.slots);
        let gone: Vec<String> = slots
            .keys()
            .filter(|uid| !present.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(slot) = slots.remove(&uid) {
                forget_series(&slot, metrics);
            }
        }
    }

    /// How many pipelines are remembered.
    pub fn len(&self) -> usize {
        lock(&self.slots).len()
    }
}

fn forget_series(slot: &Slot, metrics: &Metrics) {
    let labels = PipelineLabels {
        namespace: slot.namespace.clone(),
        pipeline: slot.name.clone(),
    };
    // A reconcile may hold the memory right now (it is being forgotten under it): the series
    // it names are then those seen so far, and the fixed per-pipeline ones go regardless.
    let series = slot
        .memory
        .try_lock()
        .map(|memory| memory.scaler.series.clone())
        .unwrap_or_default();
    metrics.forget_pipeline(&labels, &series);
}
