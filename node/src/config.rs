//! The node's configuration file (`config.toml` in the data dir): serde structs
//! with `deny_unknown_fields`, the commented default file that `oda-node init`
//! writes, and validation that names the offending field.

use std::path::{Path, PathBuf};

use libp2p::Multiaddr;
use oda_protocol::NetworkId;
use serde::{Deserialize, Serialize};

/// Environment variable overriding the data directory.
pub const DATA_DIR_ENV: &str = "ODA_DATA_DIR";

/// File names inside the data directory.
pub mod files {
    /// The node's ed25519 seed (hex, mode 0600).
    pub const KEY: &str = "node.key";
    /// The configuration.
    pub const CONFIG: &str = "config.toml";
    /// Written at start: peer id and listen addresses (JSON).
    pub const RUNTIME: &str = "node.json";
    /// The store (sled database and blob files).
    pub const STORE: &str = "store";
}

/// The platform's default data directory (e.g. `~/.local/share/oda-mesh` on Linux),
/// unless `ODA_DATA_DIR` is set.
pub fn default_data_dir() -> Result<PathBuf, ConfigError> {
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("org", "oda-hub", "oda-mesh")
        .map(|d| d.data_dir().to_path_buf())
        .ok_or(ConfigError::NoHome)
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Network id, part of every protocol and topic name. Default `main`.
    pub network: String,
    /// Listen addresses. Default TCP and QUIC on port 4001, all interfaces.
    pub listen: Vec<String>,
    /// Peers to join through: bootstrap nodes or any known peer, as multiaddrs
    /// ending in `/p2p/<peer id>`. Default: none.
    pub peers: Vec<String>,
    /// Run as the platform's bootstrap node (relay server, higher connection
    /// limits). Default false.
    pub bootstrap: bool,
    /// Serve the DHT (Kademlia server mode). Default true; turn off behind NAT.
    pub dht_server: bool,
    /// Most established connections. Default 256 (bootstrap: at least 2048).
    pub max_connections: u32,
    /// Store settings.
    pub store: StoreSection,
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Cap on cached blob bytes, MiB; least recently used unpinned blobs are
    /// evicted above it. Default 10240 (10 GiB).
    pub blob_cap_mb: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            network: "main".into(),
            listen: vec![
                "/ip4/0.0.0.0/tcp/4001".into(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
            ],
            peers: Vec::new(),
            bootstrap: false,
            dht_server: true,
            max_connections: 256,
            store: StoreSection::default(),
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self { blob_cap_mb: 10240 }
    }
}

/// The configuration after validation, in typed form.
#[derive(Debug, Clone)]
pub struct Validated {
    /// Network id.
    pub network: NetworkId,
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Peers to join through.
    pub peers: Vec<Multiaddr>,
    /// Bootstrap mode.
    pub bootstrap: bool,
    /// DHT server mode.
    pub dht_server: bool,
    /// Connection cap.
    pub max_connections: u32,
    /// Blob cache cap in bytes.
    pub blob_cap_bytes: u64,
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No home directory to derive the default data dir from.
    #[error("cannot find a home directory for the default data dir; pass --data-dir or set {DATA_DIR_ENV}")]
    NoHome,
    /// Cannot read the file.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML error (unknown field, wrong type), with line and column.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A field has an invalid value.
    #[error("config field `{field}`: {problem}")]
    Field {
        /// The field.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

fn field(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

impl Config {
    /// Read and parse a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parse config text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().to_string())
    }

    /// Check every field and convert to typed values.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let network = self
            .network
            .parse::<NetworkId>()
            .map_err(|e| field("network", e.to_string()))?;
        let addrs = |name: &str, list: &[String]| -> Result<Vec<Multiaddr>, ConfigError> {
            list.iter()
                .enumerate()
                .map(|(i, a)| {
                    a.parse::<Multiaddr>().map_err(|e| {
                        field(
                            format!("{name}[{i}]"),
                            format!("{a:?} is not a multiaddr: {e}"),
                        )
                    })
                })
                .collect()
        };
        let listen = addrs("listen", &self.listen)?;
        if listen.is_empty() {
            return Err(field("listen", "must list at least one address"));
        }
        let peers = addrs("peers", &self.peers)?;
        if self.max_connections < 8 {
            return Err(field("max_connections", "must be at least 8"));
        }
        if self.store.blob_cap_mb == 0 {
            return Err(field("store.blob_cap_mb", "must be at least 1"));
        }
        let max_connections = if self.bootstrap {
            self.max_connections.max(2048)
        } else {
            self.max_connections
        };
        Ok(Validated {
            network,
            listen,
            peers,
            bootstrap: self.bootstrap,
            dht_server: self.dht_server || self.bootstrap,
            max_connections,
            blob_cap_bytes: self.store.blob_cap_mb.saturating_mul(1024 * 1024),
        })
    }
}

/// The file `oda-node init` writes: every field with its default and a comment.
pub const DEFAULT_CONFIG_TOML: &str = r#"# ODA mesh node configuration. Every field is shown with its default value.
# Unknown fields are an error. Command-line flags of `oda-node run` override these.

# Network id: part of every protocol and topic name, so test meshes never mix
# with the real one. 1-32 of a-z, 0-9 and '-'.
network = "main"

# Addresses to listen on (multiaddrs). Port 0 picks a free port.
listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]

# Peers to join through: the platform's bootstrap nodes or any peer you know,
# as multiaddrs ending in /p2p/<peer id>. `oda-node run --peer ADDR` adds more.
peers = []

# Run as the platform's bootstrap node: relay server for NATed peers, DHT
# server, at least 2048 connections.
bootstrap = false

# Serve the DHT (Kademlia server mode). Turn off on machines behind NAT that
# others cannot reach.
dht_server = true

# Most established connections.
max_connections = 256

[store]
# Cap on cached blob bytes, in MiB. Above it, the least recently used blobs
# that are not pinned are evicted.
blob_cap_mb = 10240
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_to_the_defaults() {
        assert_eq!(
            Config::parse(DEFAULT_CONFIG_TOML).unwrap(),
            Config::default()
        );
        Config::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let e = Config::parse("netwrk = \"x\"").unwrap_err();
        assert!(e.contains("unknown field `netwrk`"), "{e}");
        assert!(e.contains("line 1"), "{e}");
        let e = Config::parse("max_connections = \"many\"").unwrap_err();
        assert!(e.contains("max_connections"), "{e}");

        let c = Config {
            peers: vec!["not an address".into()],
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`peers[0]`"), "{e}");
        let c = Config {
            network: "Main Net".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("`network`"));
        let mut c = Config::default();
        c.store.blob_cap_mb = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`store.blob_cap_mb`"));
    }
}
