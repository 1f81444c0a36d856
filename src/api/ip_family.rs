//! A cluster's IP family, derived from its pod and service CIDRs as CAPD does
//! (`GetClusterIPFamily`): it decides which node addresses are reported and whether nodes get
//! IPv6 enabled.

use std::net::IpAddr;

use super::capi::ClusterNetwork;

/// The IP family of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpFamily {
    /// IPv4 only (also when no CIDRs are set).
    V4,
    /// IPv6 only.
    V6,
    /// Both.
    Dual,
}

impl IpFamily {
    /// The family of `network`: the pods' family, checked against the services' (dual-stack
    /// pods allow any services). Errors name the rule broken.
    pub fn of(network: &ClusterNetwork) -> Result<Self, String> {
        let (pods, services) = (&network.pods.cidr_blocks, &network.services.cidr_blocks);
        match (pods.is_empty(), services.is_empty()) {
            (true, true) => Ok(Self::V4),
            (false, true) => of_cidrs(pods).map_err(|e| format!("pods: {e}")),
            (true, false) => of_cidrs(services).map_err(|e| format!("services: {e}")),
            (false, false) => {
                let pods = of_cidrs(pods).map_err(|e| format!("pods: {e}"))?;
                let services = of_cidrs(services).map_err(|e| format!("services: {e}"))?;
                if pods == Self::Dual || pods == services {
                    Ok(pods)
                } else {
                    Err("pods and services IP family mismatch".into())
                }
            }
        }
    }

    /// Whether the family includes IPv4.
    pub fn has_v4(self) -> bool {
        self != Self::V6
    }

    /// Whether the family includes IPv6.
    pub fn has_v6(self) -> bool {
        self != Self::V4
    }
}

fn of_cidrs(cidrs: &[String]) -> Result<IpFamily, String> {
    if cidrs.len() > 2 {
        return Err("too many CIDRs specified".into());
    }
    let (mut v4, mut v6) = (false, false);
    for cidr in cidrs {
        let ip = parse_cidr(cidr).ok_or_else(|| format!("could not parse CIDR {cidr:?}"))?;
        match ip {
            IpAddr::V4(_) => v4 = true,
            IpAddr::V6(_) => v6 = true,
        }
    }
    Ok(match (v4, v6) {
        (true, true) => IpFamily::Dual,
        (false, true) => IpFamily::V6,
        _ => IpFamily::V4,
    })
}

/// The address of a CIDR as Go's `net.ParseCIDR` accepts it (decimal prefix length within the
/// address's size), IPv4-mapped IPv6 counted as IPv4 as Go's `To4` does.
fn parse_cidr(cidr: &str) -> Option<IpAddr> {
    let (ip, bits) = cidr.split_once('/')?;
    if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = bits.parse().ok()?;
    let ip: IpAddr = ip.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then(|| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::capi::NetworkRanges;

    fn network(pods: &[&str], services: &[&str]) -> ClusterNetwork {
        let ranges = |c: &[&str]| NetworkRanges {
            cidr_blocks: c.iter().map(|s| (*s).to_owned()).collect(),
        };
        ClusterNetwork {
            pods: ranges(pods),
            services: ranges(services),
        }
    }

    #[test]
    fn family_follows_capd() {
        let v4 = "192.168.0.0/16";
        let v6 = "fd00:100:96::/48";
        type Case<'a> = (&'a [&'a str], &'a [&'a str], Result<IpFamily, &'a str>);
        let cases: [Case; 9] = [
            (&[], &[], Ok(IpFamily::V4)),
            (&[v4], &[], Ok(IpFamily::V4)),
            (&[], &[v6], Ok(IpFamily::V6)),
            (&[v6], &["fd00:10:96::/112"], Ok(IpFamily::V6)),
            (&[v4, v6], &["10.96.0.0/12"], Ok(IpFamily::Dual)),
            (&[v4], &[v6], Err("pods and services IP family mismatch")),
            (&[v4, v4, v6], &[], Err("pods: too many CIDRs specified")),
            (
                &["nonsense"],
                &[],
                Err("pods: could not parse CIDR \"nonsense\""),
            ),
            (
                &[v4],
                &["10.0.0.0/x"],
                Err("services: could not parse CIDR \"10.0.0.0/x\""),
            ),
        ];
        for (pods, services, expected) in cases {
            assert_eq!(
                IpFamily::of(&network(pods, services)),
                expected.map_err(str::to_owned),
                "{pods:?} {services:?}"
            );
        }
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "fd00::/129",
            "10.0.0.0/",
            "10.0.0.0",
        ] {
            assert!(IpFamily::of(&network(&[bad], &[])).is_err(), "{bad}");
        }
        // Go's To4 counts an IPv4-mapped IPv6 address as IPv4.
        assert_eq!(
            IpFamily::of(&network(&["::ffff:10.0.0.0/104"], &[])),
            Ok(IpFamily::V4)
        );
        assert!(IpFamily::Dual.has_v4() && IpFamily::Dual.has_v6());
        assert!(!IpFamily::V4.has_v6() && !IpFamily::V6.has_v4());
    }
}
