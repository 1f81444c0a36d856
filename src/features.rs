//! Feature gates (`--feature-gates=ClusterTopology=true,...`), parsed as Kubernetes components
//! parse them.

/// The feature gates capd-rs acts on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// ClusterTopology (alpha, default false): DockerClusterTemplates may only be created when on.
    pub cluster_topology: bool,
}

/// Gates CAPD knows that capd-rs accepts for flag compatibility but does not act on.
const ACCEPTED_GATES: &[&str] = &[
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

impl std::str::FromStr for Features {
    type Err = String;

    /// Parses `Name=bool` pairs separated by commas; an unknown name or a value that is not a
    /// boolean is an error naming it.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut features = Self::default();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                format!("missing bool value for feature gate {pair:?} (expected Name=true|false)")
            })?;
            let enabled: bool = value.trim().parse().map_err(|_| {
                format!("invalid value of {name}: {value:?}, expected true or false")
            })?;
            match name.trim() {
                "ClusterTopology" => features.cluster_topology = enabled,
                other if ACCEPTED_GATES.contains(&other) => {}
                other => return Err(format!("unrecognized feature gate: {other}")),
            }
        }
        Ok(features)
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
                .contains("expected true or false")
        );
    }
}
