//! Protocol and gossip topic names. Every name carries the network id (so test
//! meshes never mix with the real one) and a major version.

use std::fmt;
use std::str::FromStr;

use crate::ids::WorkflowId;

/// Current major version of every ODA mesh protocol but the blob protocol:
/// 3 since gossip payloads are signed by their authors instead of by
/// gossipsub (2: a fact names the input fact, id and signer, behind each
/// input).
pub const MAJOR: u32 = 3;

/// Major version of the blob protocol: 2 since ranges carry their BLAKE3 tree
/// hashes (a v1 peer sent bare bytes, checked only once the whole blob was in).
pub const BLOB_MAJOR: u32 = 2;

/// Number of workflow-id bytes in a jobs topic name (hex: twice as many digits).
pub const JOBS_TOPIC_PREFIX_BYTES: usize = 8;

/// A network id: 1-32 of `a-z`, `0-9` and `-`. The default is `main`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetworkId(String);

/// A network id that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network id {0:?} is invalid: use 1-32 of a-z, 0-9 and '-'")]
pub struct BadNetworkId(pub String);

impl NetworkId {
    /// The real mesh.
    pub fn main() -> Self {
        Self("main".into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `/oda/<net>/kad/2`: the Kademlia protocol.
    pub fn kad_protocol(&self) -> String {
        format!("/oda/{}/kad/{MAJOR}", self.0)
    }

    /// `/oda/<net>/job/2`: offers, assignments, progress, results.
    pub fn job_protocol(&self) -> String {
        format!("/oda/{}/job/{MAJOR}", self.0)
    }

    /// `/oda/<net>/fact/2`: `GetFacts`.
    pub fn fact_protocol(&self) -> String {
        format!("/oda/{}/fact/{MAJOR}", self.0)
    }

    /// `/oda/<net>/blob/2`: verified ranged blob reads.
    pub fn blob_protocol(&self) -> String {
        format!("/oda/{}/blob/{BLOB_MAJOR}", self.0)
    }

    /// `/oda/<net>/id/2`: the identify protocol version string.
    pub fn identify_protocol(&self) -> String {
        format!("/oda/{}/id/{MAJOR}", self.0)
    }
}

impl Default for NetworkId {
    fn default() -> Self {
        Self::main()
    }
}

impl FromStr for NetworkId {
    type Err = BadNetworkId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(BadNetworkId(s.to_string()))
        }
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A gossip topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `/oda/<net>/jobs/<first 8 bytes of the workflow id, hex>/1`.
    Jobs {
        /// Hex prefix of the workflow id.
        workflow_prefix: String,
    },
    /// `/oda/<net>/facts/2`.
    Facts,
    /// `/oda/<net>/capacity/2`.
    Capacity,
}

/// A topic string that is not an ODA mesh topic of this network and version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a topic of network {network} version {MAJOR}: {topic:?}")]
pub struct BadTopic {
    /// The network expected.
    pub network: String,
    /// The topic string.
    pub topic: String,
}

impl Topic {
    /// The jobs topic of a workflow.
    pub fn jobs(workflow: &WorkflowId) -> Self {
        Topic::Jobs {
            workflow_prefix: workflow.short(JOBS_TOPIC_PREFIX_BYTES),
        }
    }

    /// The full topic string on network `net`.
    pub fn encode(&self, net: &NetworkId) -> String {
        match self {
            Topic::Jobs { workflow_prefix } => format!("/oda/{net}/jobs/{workflow_prefix}/{MAJOR}"),
            Topic::Facts => format!("/oda/{net}/facts/{MAJOR}"),
            Topic::Capacity => format!("/oda/{net}/capacity/{MAJOR}"),
        }
    }

    /// Parse a topic string of network `net`.
    pub fn decode(net: &NetworkId, topic: &str) -> Result<Self, BadTopic> {
        let bad = || BadTopic {
            network: net.to_string(),
            topic: topic.to_string(),
        };
        let rest = topic
            .strip_prefix("/oda/")
            .and_then(|r| r.strip_prefix(net.as_str()))
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let version = MAJOR.to_string();
        match parts.as_slice() {
            ["facts", v] if *v == version => Ok(Topic::Facts),
            ["capacity", v] if *v == version => Ok(Topic::Capacity),
            ["jobs", prefix, v]
                if *v == version
                    && prefix.len() == 2 * JOBS_TOPIC_PREFIX_BYTES
                    && prefix
                        .chars()
                        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) =>
            {
                Ok(Topic::Jobs {
                    workflow_prefix: prefix.to_string(),
                })
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_network_and_version() {
        let net: NetworkId = "test-1".parse().unwrap();
        assert_eq!(net.kad_protocol(), "/oda/test-1/kad/3");
        assert_eq!(net.job_protocol(), "/oda/test-1/job/3");
        assert_eq!(net.fact_protocol(), "/oda/test-1/fact/3");
        assert_eq!(net.blob_protocol(), "/oda/test-1/blob/2");
        let wf = WorkflowId([0xab; 32]);
        let t = Topic::jobs(&wf);
        assert_eq!(t.encode(&net), "/oda/test-1/jobs/abababababababab/3");
        for topic in [t, Topic::Facts, Topic::Capacity] {
            assert_eq!(Topic::decode(&net, &topic.encode(&net)).unwrap(), topic);
            assert!(Topic::decode(&NetworkId::main(), &topic.encode(&net)).is_err());
        }
        // A peer of the previous major version is not understood.
        assert!(Topic::decode(&net, "/oda/test-1/facts/2").is_err());
        assert!(Topic::decode(&net, "/oda/test-1/jobs/XYZ/2").is_err());
        assert!("Main".parse::<NetworkId>().is_err());
        assert!("".parse::<NetworkId>().is_err());
    }
}
