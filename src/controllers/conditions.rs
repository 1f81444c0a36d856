//! `metav1.Condition` bookkeeping: a condition's `lastTransitionTime` moves only when its status
//! changes, so setting the same condition again changes nothing and causes no write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types and reasons the provider sets (CAPD's names).
pub mod names {
    /// The summary condition.
    pub const READY: &str = "Ready";
    /// Whether reconciliation is paused.
    pub const PAUSED: &str = "Paused";
    /// Whether the cluster's load balancer is available.
    pub const LOAD_BALANCER_AVAILABLE: &str = "LoadBalancerAvailable";
    /// Reason: paused.
    pub const REASON_PAUSED: &str = "Paused";
    /// Reason: not paused.
    pub const REASON_NOT_PAUSED: &str = "NotPaused";
    /// Reason: the load balancer is available.
    pub const REASON_AVAILABLE: &str = "Available";
    /// Reason: the load balancer is not available.
    pub const REASON_NOT_AVAILABLE: &str = "NotAvailable";
    /// Reason: the object is being deleted.
    pub const REASON_DELETING: &str = "Deleting";
    /// Reason: the summary is ready.
    pub const REASON_READY: &str = "Ready";
    /// Reason: the summary is not ready.
    pub const REASON_NOT_READY: &str = "NotReady";
}

/// The status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// "True".
    True,
    /// "False".
    False,
    /// "Unknown".
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// Sets condition `type_` in `conditions`; returns whether anything changed. Keeps the
/// condition's `lastTransitionTime` unless its status changes (then it becomes `now`).
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let wanted = |last_transition_time: Time| Condition {
        type_: type_.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            let time = if existing.status == status.as_str() {
                existing.last_transition_time.clone()
            } else {
                Time(now)
            };
            let updated = wanted(time);
            let changed = *existing != updated;
            *existing = updated;
            changed
        }
        None => {
            conditions.push(wanted(Time(now)));
            true
        }
    }
}

/// The condition `type_`, if set.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether condition `type_` is set and "True".
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn transition_time_moves_only_with_status() {
        let mut conditions = Vec::new();
        assert!(set(
            &mut conditions,
            "Ready",
            Status::False,
            "NotReady",
            "waiting",
            Some(1),
            at(10)
        ));
        assert!(
            !set(
                &mut conditions,
                "Ready",
                Status::False,
                "NotReady",
                "waiting",
                Some(1),
                at(20)
            ),
            "same again is no change"
        );
        assert!(set(
            &mut conditions,
            "Ready",
            Status::False,
            "NotReady",
            "still waiting",
            Some(1),
            at(30)
        ));
        assert_eq!(
            conditions[0].last_transition_time,
            Time(at(10)),
            "message change keeps the time"
        );
        assert!(set(
            &mut conditions,
            "Ready",
            Status::True,
            "Ready",
            "",
            Some(2),
            at(40)
        ));
        assert_eq!(conditions[0].last_transition_time, Time(at(40)));
        assert!(is_true(&conditions, "Ready"));
        assert!(!is_true(&conditions, "Paused"));
        assert_eq!(conditions.len(), 1);
    }
}
