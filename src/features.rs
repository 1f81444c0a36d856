//! Feature gates (`--feature-gates=ClusterTopology=true,...`, repeatable), parsed as Kubernetes
//! components parse them: Go booleans, CAPD's gate names, `AllAlpha` / `AllBeta` for the gates
//! not set one by one.

use crate::flags::go_bool;

/// The feature gates capd-rs acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// ClusterTopology (alpha, default false): DockerClusterTemplates may only be created when on.
    pub cluster_topology: bool,
}

/// Gates CAPD knows that capd-rs accepts for flag compatibility but does not act on.
const ACCEPTED_GATES: &[&str] = &[
    "AllBeta",
    "MachinePool",
    "PriorityQueue",
    "ReconcilerRateLimiting",
    "RuntimeSDK",
    "KubeadmBootstrapFormatIgnition",
    "MachineSetPreflightChecks",
    "InPlaceUpdates",
    "MachineTaintPropagation",
    "MachineWaitForVolumeDetachConsiderVolumeAttachments",
];

/// One `Name=bool` pair, checked: the gate is known and the value a Go boolean.
fn gate(pair: &str) -> Result<(&str, bool), String> {
    let (name, value) = pair.split_once('=').ok_or_else(|| {
        format!("missing bool value for feature gate {pair:?} (expected Name=true|false)")
    })?;
    let (name, value) = (name.trim(), value.trim());
    let enabled = go_bool(value).map_err(|e| format!("invalid value of {name}={value}: {e}"))?;
    if name != "ClusterTopology" && name != "AllAlpha" && !ACCEPTED_GATES.contains(&name) {
        return Err(format!("unrecognized feature gate: {name}"));
    }
    Ok((name, enabled))
}

/// The pairs of one `--feature-gates` value.
fn pairs(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|p| !p.is_empty())
}

/// Checks one `--feature-gates` value (for the flag's parser): every pair must be valid.
pub fn check(text: &str) -> Result<String, String> {
    pairs(text).try_for_each(|pair| gate(pair).map(drop))?;
    Ok(text.to_owned())
}

impl Features {
    /// The gates set by `values` (each a comma-separated list of `Name=bool`; a later value
    /// wins); a gate set by name wins over `AllAlpha`.
    pub fn from_values<S: AsRef<str>>(values: &[S]) -> Result<Self, String> {
        let (mut topology, mut all_alpha) = (None, None);
        for value in values {
            for pair in pairs(value.as_ref()) {
                match gate(pair)? {
                    ("ClusterTopology", enabled) => topology = Some(enabled),
                    ("AllAlpha", enabled) => all_alpha = Some(enabled),
                    _ => {}
                }
            }
        }
        Ok(Self {
            cluster_topology: topology.or(all_alpha).unwrap_or(false),
        })
    }
}

impl std::str::FromStr for Features {
    type Err = String;

    /// Parses `Name=bool` pairs separated by commas; an unknown name or a value that is not a
    /// boolean is an error naming it.
    fn from_str(text: &str) -> Result<Self, String> {
        Self::from_values(&[text])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gates_like_kubernetes() {
        assert_eq!("".parse::<Features>(), Ok(Features::default()));
        let on: Features = "MachinePool=true, ClusterTopology=true".parse().unwrap();
        assert!(on.cluster_topology);
        let off: Features = "ClusterTopology=false".parse().unwrap();
        assert!(!off.cluster_topology);
        assert!(
            "ClusterTopology=T"
                .parse::<Features>()
                .unwrap()
                .cluster_topology
        );
        assert_eq!(
            "Bogus=true".parse::<Features>(),
            Err("unrecognized feature gate: Bogus".into())
        );
        assert!(
            "ClusterTopology"
                .parse::<Features>()
                .unwrap_err()
                .contains("missing bool value")
        );
        assert!(
            "ClusterTopology=yes"
                .parse::<Features>()
                .unwrap_err()
                .contains("invalid value of ClusterTopology=yes")
        );
    }

    #[test]
    fn repeated_values_merge_and_named_gates_win_over_all_alpha() {
        let merged = Features::from_values(&["ClusterTopology=true", "MachinePool=false"]).unwrap();
        assert!(merged.cluster_topology);
        let later =
            Features::from_values(&["ClusterTopology=true", "ClusterTopology=false"]).unwrap();
        assert!(!later.cluster_topology);
        assert!(
            Features::from_values(&["AllAlpha=true"])
                .unwrap()
                .cluster_topology
        );
        let named = Features::from_values(&["AllAlpha=true,ClusterTopology=false"]).unwrap();
        assert!(!named.cluster_topology);
        assert_eq!(check("AllBeta=true"), Ok("AllBeta=true".into()));
        assert!(check("Nope=true").is_err());
    }
}
