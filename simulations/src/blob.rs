//! Verified blob transfer between two peers (`Client::fetch_blob_from`:
//! noise + yamux, 1 MiB pieces, 8 in flight, each 16 KiB chunk group checked
//! against the BLAKE3 tree, fsync), against a plain loopback TCP copy of the
//! same number of bytes.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::mesh::{eventually, spawn_in, XorShift};
use crate::network_id;

/// MiB/s of the transfers.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    /// Bytes moved.
    pub bytes: u64,
    /// The mesh's verified fetch, MiB/s.
    pub mesh_mib_s: f64,
    /// Raw loopback TCP, MiB/s.
    pub tcp_mib_s: f64,
    /// BLAKE3 of the bytes on one core, MiB/s (what verification costs).
    pub blake3_mib_s: f64,
    /// Writing the same number of bytes to a file in the temp dir and
    /// fsyncing it (what any receiver that keeps the bytes pays), MiB/s.
    pub disk_mib_s: f64,
    /// Cores the process (both peers) kept busy during the mesh's fetch, if
    /// known.
    pub fetch_cores: Option<f64>,
    /// The same fetch with both stores on tmpfs (no disk), MiB/s, where the
    /// machine has `/dev/shm`.
    pub tmpfs_mib_s: Option<f64>,
    /// ChaCha20-Poly1305 (noise's transport cipher, the `ring` code libp2p
    /// uses) on one core, 64 KiB frames: (seal, open) MiB/s. Every byte of
    /// the fetch is sealed by one peer and opened by the other.
    pub cipher_mib_s: (f64, f64),
}

const CHUNK: usize = 4 << 20;

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64().max(1e-9)
}

/// Where the tmpfs variant keeps both peers' stores, if this machine has it.
const TMPFS: &str = "/dev/shm";

/// Move `bytes` bytes through the mesh (stores on disk, then on tmpfs when
/// there is one) and over plain TCP, and report the rates.
pub async fn measure(bytes: u64) -> anyhow::Result<Transfer> {
    let tcp_mib_s = tcp_copy(bytes).await?;
    let disk_mib_s = tokio::task::spawn_blocking(move || disk_write(bytes))
        .await
        .context("the disk writer panicked")??;
    let cipher_mib_s = tokio::task::spawn_blocking(cipher_rates)
        .await
        .context("the cipher measurement panicked")?;
    let on_disk = fetch(bytes, None).await?;
    let tmpfs = std::path::Path::new(TMPFS);
    let on_tmpfs = if tmpfs.is_dir() {
        Some(fetch(bytes, Some(tmpfs)).await?)
    } else {
        None
    };
    Ok(Transfer {
        bytes,
        mesh_mib_s: on_disk.mib_s,
        tcp_mib_s,
        blake3_mib_s: on_disk.blake3_mib_s,
        disk_mib_s,
        fetch_cores: on_disk.cores,
        tmpfs_mib_s: on_tmpfs.map(|f| f.mib_s),
        cipher_mib_s,
    })
}

/// ChaCha20-Poly1305 seal and open of 64 KiB frames (noise's largest) on
/// one core for about half a second each: (seal, open) MiB/s.
fn cipher_rates() -> (f64, f64) {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    const FRAME: usize = 64 * 1024 - 16;
    const FRAMES: usize = 2048; // 128 MiB
    let key =
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7; 32]).expect("a 32-byte key"));
    let nonce = |i: usize| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&(i as u64).to_le_bytes());
        Nonce::assume_unique_for_key(n)
    };
    let mut frames: Vec<Vec<u8>> = (0..FRAMES).map(|i| vec![i as u8; FRAME]).collect();
    let t = Instant::now();
    for (i, f) in frames.iter_mut().enumerate() {
        key.seal_in_place_append_tag(nonce(i), Aad::empty(), f)
            .expect("sealing in memory does not fail");
    }
    let seal = t.elapsed();
    let t = Instant::now();
    for (i, f) in frames.iter_mut().enumerate() {
        std::hint::black_box(
            key.open_in_place(nonce(i), Aad::empty(), f)
                .expect("what was sealed opens"),
        );
    }
    let open = t.elapsed();
    let bytes = (FRAME * FRAMES) as u64;
    (mib_s(bytes, seal), mib_s(bytes, open))
}

/// One verified fetch between two fresh peers.
struct Fetched {
    mib_s: f64,
    blake3_mib_s: f64,
    cores: Option<f64>,
}

/// Two peers with their stores under `root` (the temp dir if `None`): the
/// holder stores `bytes` pseudo-random bytes, the fetcher fetches them.
async fn fetch(bytes: u64, root: Option<&std::path::Path>) -> anyhow::Result<Fetched> {
    let net = network_id("blob");
    let holder = spawn_in(root, &net, vec![], false, 0, None).await?;
    let fetcher = spawn_in(root, &net, vec![holder.addr.clone()], false, 1, None).await?;
    let holder_id = holder.peer_id();
    eventually("the peers connect", Duration::from_secs(30), || {
        let c = fetcher.client.clone();
        async move {
            c.peers()
                .await
                .ok()?
                .iter()
                .any(|p| p.peer == holder_id)
                .then_some(())
        }
    })
    .await?;

    // Pseudo-random bytes, streamed into the holder's store.
    let store = holder.store.clone();
    let (blob, blake3_mib_s) = tokio::task::spawn_blocking(move || {
        let mut rng = XorShift(0x0da);
        let mut buf = vec![0u8; CHUNK];
        let mut hash_time = Duration::ZERO;
        let mut writer = store.blob_writer()?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            rng.fill(&mut buf[..n]);
            writer.write(&buf[..n])?;
            let h = Instant::now();
            std::hint::black_box(blake3::hash(&buf[..n]));
            hash_time += h.elapsed();
            left -= n as u64;
        }
        let id = writer.finish(None)?;
        anyhow::Ok((id, mib_s(bytes, hash_time)))
    })
    .await
    .context("the blob writer panicked")??;

    let cpu = crate::process::cpu_seconds();
    let t = Instant::now();
    let size = fetcher
        .client
        .fetch_blob_from(blob, Some(bytes), vec![holder_id], &fetcher.store)
        .await
        .context("the verified fetch failed")?;
    let elapsed = t.elapsed();
    let cores = cpu
        .zip(crate::process::cpu_seconds())
        .map(|(a, b)| (b - a) / elapsed.as_secs_f64());
    if size != bytes || !fetcher.store.has_blob(&blob) {
        bail!("the fetch returned {size} bytes, expected {bytes}");
    }
    Ok(Fetched {
        mib_s: mib_s(bytes, elapsed),
        blake3_mib_s,
        cores,
    })
}

/// Write `bytes` bytes (4 MiB writes) to a new file in the temp dir and fsync
/// it; MiB/s.
pub fn disk_write(bytes: u64) -> anyhow::Result<f64> {
    use std::io::Write;
    let dir = tempfile::tempdir().context("temp dir")?;
    let path = dir.path().join("disk-limit");
    let buf = vec![0xa5u8; CHUNK];
    let t = Instant::now();
    let mut f = std::fs::File::create(&path).context("create the test file")?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        f.write_all(&buf[..n]).context("write the test file")?;
        left -= n as u64;
    }
    f.sync_all().context("fsync the test file")?;
    Ok(mib_s(bytes, t.elapsed()))
}

/// Copy `bytes` bytes over one loopback TCP connection (1 MiB writes and
/// reads, tokio), connect to last byte read.
pub async fn tcp_copy(bytes: u64) -> anyhow::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sender = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await?;
        let buf = vec![0x5au8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            sock.write_all(&buf[..n]).await?;
            left -= n as u64;
        }
        sock.shutdown().await?;
        anyhow::Ok(())
    });
    let t = Instant::now();
    let mut sock = tokio::net::TcpStream::connect(addr).await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    while got < bytes {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    let elapsed = t.elapsed();
    sender.await.context("the TCP sender panicked")??;
    if got != bytes {
        bail!("TCP copy moved {got} of {bytes} bytes");
    }
    Ok(mib_s(bytes, elapsed))
}
