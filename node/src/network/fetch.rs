//! Verified blob fetches ([`fetch`]): pieces of [`limits::BLOB_CHUNK`] bytes
//! asked from every provider at once, [`BLOB_WINDOW`] in flight per provider,
//! each checked chunk group by chunk group against the blob id as it arrives
//! (the blob protocol carries the BLAKE3 tree hashes) and written into a
//! [`PartialBlob`] on a blocking thread.
//!
//! A provider that sends a bad chunk is caught at that chunk, penalised and
//! dropped; one that fails (not found, timeout, disconnect) is dropped; the
//! pieces either was fetching go to the others. Pieces already verified by an
//! interrupted fetch are not asked for again. When the size is not known from
//! a fact, the first provider proves it (the first and the last piece) before
//! anyone else is asked, so a provider announcing another size afterwards is
//! lying.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use futures::stream::{FuturesUnordered, StreamExt};
use libp2p::PeerId;
use oda_protocol::codec::limits;
use oda_protocol::messages::{BlobRequest, BlobResponse};
use oda_protocol::BlobId;

use super::client::{Client, Command};
use super::scoring::Offence;
use super::NetworkError;
use crate::store::{PartialBlob, Store, StoreError};

/// How many piece requests are in flight at once per provider.
pub(super) const BLOB_WINDOW: usize = 8;

/// A piece: `(offset, len)`.
type Piece = (u64, u32);

/// Why fetching from one provider stopped.
enum FetchError {
    /// The provider sent bytes, hashes or sizes that cannot be right.
    Lied(String),
    /// The provider could not serve (not found, timeout, disconnect).
    Failed(String),
    /// Our store failed.
    Store(StoreError),
}

/// Fetch `blob` into `store` from `providers`, verified; returns its size.
/// `expected_size` is the size a fact gives, if any. Does nothing if the store
/// already holds the blob; waits for a fetch of the same blob under way.
pub(super) async fn fetch(
    client: &Client,
    blob: BlobId,
    expected_size: Option<u64>,
    providers: Vec<PeerId>,
    store: &Store,
) -> Result<u64, NetworkError> {
    if let Some(size) = store.blob_size(&blob) {
        return Ok(size);
    }
    let lock = store.fetch_lock(&blob);
    let _one_at_a_time = lock.lock().await;
    if let Some(size) = store.blob_size(&blob) {
        return Ok(size);
    }
    let mut fetch = Fetch {
        client,
        blob,
        peers: providers,
        attempts: Vec::new(),
    };
    let result = fetch.run(expected_size, store).await;
    match result {
        Ok(size) => {
            if let Err(e) = client.provide_blob(&blob).await {
                tracing::debug!(%blob, error = %e, "could not announce fetched blob");
            }
            Ok(size)
        }
        Err(FetchError::Store(e)) => Err(NetworkError::Store(e.to_string())),
        Err(FetchError::Lied(_) | FetchError::Failed(_)) => {
            if fetch.attempts.is_empty() {
                fetch.attempts.push("no provider found".into());
            }
            Err(NetworkError::BlobUnavailable {
                blob: blob.to_string(),
                attempts: fetch.attempts.join("; "),
            })
        }
    }
}

/// One fetch: the providers still in the running and what went wrong with the
/// others.
struct Fetch<'a> {
    client: &'a Client,
    blob: BlobId,
    peers: Vec<PeerId>,
    attempts: Vec<String>,
}

impl Fetch<'_> {
    async fn run(&mut self, expected_size: Option<u64>, store: &Store) -> Result<u64, FetchError> {
        let partial = match expected_size {
            Some(size) => open_partial(store, self.blob, size).await?,
            None => self.prove_size(store).await?,
        };
        let partial = Arc::new(partial);
        let queue = Mutex::new(VecDeque::from(partial.missing()));
        while !queue_is_empty(&queue) {
            if self.peers.is_empty() {
                return Err(FetchError::Failed("every provider failed".into()));
            }
            let this = &*self;
            let lanes = this.peers.iter().map(|&peer| {
                let partial = &partial;
                let queue = &queue;
                async move { (peer, this.lane(peer, partial, queue).await) }
            });
            let results = futures::future::join_all(lanes).await;
            for (peer, result) in results {
                if let Err(e) = result {
                    self.drop_peer(peer, e).await?;
                }
            }
        }
        let size = partial.size();
        let partial = Arc::into_inner(partial)
            .ok_or_else(|| FetchError::Failed("a piece is still being written".into()))?;
        blocking(move || partial.finish()).await?;
        Ok(size)
    }

    /// Learn the blob's size from the providers in turn: each answers the
    /// first piece, and the last piece (whose final chunk proves the size)
    /// comes from the same provider before anyone else is asked.
    async fn prove_size(&mut self, store: &Store) -> Result<PartialBlob, FetchError> {
        while let Some(&peer) = self.peers.first() {
            let proved = async {
                let (size, first) = self.request(peer, (0, limits::BLOB_CHUNK as u32)).await?;
                let partial = open_partial(store, self.blob, size).await?;
                let partial = Arc::new(partial);
                let written = async {
                    let chunk = limits::BLOB_CHUNK as u64;
                    write(&partial, (0, size.min(chunk) as u32), first).await?;
                    if size > chunk {
                        let offset = (size - 1) / chunk * chunk;
                        // At most one chunk, so it fits in u32.
                        let last = (offset, (size - offset) as u32);
                        let (total, encoded) = self.request(peer, last).await?;
                        same_size(total, size)?;
                        write(&partial, last, encoded).await?;
                    }
                    Ok(())
                }
                .await;
                let partial = Arc::into_inner(partial)
                    .ok_or_else(|| FetchError::Failed("a piece is still being written".into()))?;
                match written {
                    Ok(()) => Ok(partial),
                    Err(e) => {
                        // The size itself may be the lie: start over.
                        blocking(move || partial.discard()).await?;
                        Err(e)
                    }
                }
            }
            .await;
            match proved {
                Ok(partial) => return Ok(partial),
                Err(e) => self.drop_peer(peer, e).await?,
            }
        }
        Err(FetchError::Failed("every provider failed".into()))
    }

    /// Fetch pieces from one provider until the queue is empty or the
    /// provider fails; a failed piece goes back to the queue, and so do the
    /// others it had in flight once they finish.
    async fn lane(
        &self,
        peer: PeerId,
        partial: &Arc<PartialBlob>,
        queue: &Mutex<VecDeque<Piece>>,
    ) -> Result<(), FetchError> {
        let size = partial.size();
        let mut in_flight = FuturesUnordered::new();
        let mut failure = None;
        loop {
            while failure.is_none() && in_flight.len() < BLOB_WINDOW {
                let Some(piece) = pop(queue) else { break };
                in_flight.push(async move {
                    let result = async {
                        let (total, encoded) = self.request(peer, piece).await?;
                        same_size(total, size)?;
                        write(partial, piece, encoded).await
                    }
                    .await;
                    (piece, result)
                });
            }
            let Some((piece, result)) = in_flight.next().await else {
                return failure.map_or(Ok(()), Err);
            };
            if let Err(e) = result {
                queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_front(piece);
                if failure.is_none() {
                    failure = Some(e);
                }
            }
        }
    }

    /// Ask one provider for one piece.
    async fn request(
        &self,
        peer: PeerId,
        (offset, len): Piece,
    ) -> Result<(u64, Vec<u8>), FetchError> {
        let req = BlobRequest {
            blob: self.blob,
            offset,
            len,
        };
        match self
            .client
            .ask(|r| Command::RequestBlob(peer, req, r))
            .await
        {
            Ok(BlobResponse::Data { total, encoded }) => Ok((total, encoded)),
            Ok(BlobResponse::NotFound) => Err(FetchError::Failed("does not hold it".into())),
            Ok(BlobResponse::BadRange(why)) => Err(FetchError::Failed(format!(
                "refused range at {offset}: {why}"
            ))),
            Err(e) => Err(FetchError::Failed(e.to_string())),
        }
    }

    /// Take a provider out of this fetch, penalising it if it lied. A store
    /// failure ends the whole fetch.
    async fn drop_peer(&mut self, peer: PeerId, e: FetchError) -> Result<(), FetchError> {
        self.peers.retain(|p| *p != peer);
        match e {
            FetchError::Lied(reason) => {
                tracing::warn!(%peer, blob = %self.blob, %reason, "provider sent wrong bytes; penalising");
                self.client.penalise(peer, Offence::WrongBlobBytes).await;
                self.attempts.push(format!("{peer}: {reason}"));
                Ok(())
            }
            FetchError::Failed(reason) => {
                tracing::debug!(%peer, blob = %self.blob, %reason, "provider failed");
                self.attempts.push(format!("{peer}: {reason}"));
                Ok(())
            }
            FetchError::Store(e) => Err(FetchError::Store(e)),
        }
    }
}

/// A provider must give the size the fetch is sure of.
fn same_size(total: u64, size: u64) -> Result<(), FetchError> {
    if total == size {
        Ok(())
    } else {
        Err(FetchError::Lied(format!(
            "announced {total} bytes, the blob has {size}"
        )))
    }
}

/// Check and write one piece on a blocking thread.
async fn write(
    partial: &Arc<PartialBlob>,
    (offset, len): Piece,
    encoded: Vec<u8>,
) -> Result<(), FetchError> {
    let partial = Arc::clone(partial);
    blocking(move || partial.write_piece(offset, len, &encoded)).await
}

async fn open_partial(store: &Store, blob: BlobId, size: u64) -> Result<PartialBlob, FetchError> {
    let store = store.clone();
    blocking(move || store.partial_blob(blob, size)).await
}

/// Run a store call on the blocking pool; a bad piece is the provider's lie.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, FetchError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(StoreError::BadPiece { reason, .. })) => Err(FetchError::Lied(reason)),
        Ok(Err(e)) => Err(FetchError::Store(e)),
        Err(e) => Err(FetchError::Store(StoreError::Task(e.to_string()))),
    }
}

fn pop(queue: &Mutex<VecDeque<Piece>>) -> Option<Piece> {
    queue
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop_front()
}

fn queue_is_empty(queue: &Mutex<VecDeque<Piece>>) -> bool {
    queue
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_empty()
}
