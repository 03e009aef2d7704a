//! The request-response codec for the fact, blob and job protocols: a 4-byte
//! big-endian length prefix, then the `oda_protocol::codec` encoding of one
//! message. Reads refuse lengths above the message type's named maximum before
//! reading on, grow their buffer only as bytes arrive (a peer that announces
//! a large message and sends little makes the node hold little), and every
//! read and write has a deadline.

use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response;
use libp2p::StreamProtocol;
use oda_protocol::Wire;

/// How long one message may take to arrive once its stream is open.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Length-prefixed [`Wire`] codec for request type `Req` and response type `Resp`.
pub struct WireCodec<Req, Resp>(PhantomData<fn() -> (Req, Resp)>);

impl<Req, Resp> Default for WireCodec<Req, Resp> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Req, Resp> Clone for WireCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

async fn with_deadline<T>(fut: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer too slow sending a message"))?
}

/// Read one length-prefixed message of type `M`.
pub async fn read_message<M: Wire, T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<M> {
    with_deadline(async {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > M::MAX_SIZE {
            return Err(invalid(format!(
                "{} of {len} bytes exceeds the limit of {}",
                M::WHAT,
                M::MAX_SIZE
            )));
        }
        let buf = read_body(io, len).await?;
        M::decode(&buf).map_err(invalid)
    })
    .await
}

/// Read exactly `len` bytes, holding no more memory than about twice what
/// has arrived (plus [`READ_STEP`]): the announced length is never
/// allocated up front. The buffer doubles as it fills, each byte zeroed once.
async fn read_body<T: AsyncRead + Unpin + Send>(io: &mut T, len: usize) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::new();
    let mut filled = 0;
    while filled < len {
        if filled == buf.len() {
            let grow = (len - filled).min(filled.max(READ_STEP));
            buf.reserve_exact(grow);
            buf.resize(filled + grow, 0);
        }
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the stream ended after {filled} of {len} announced bytes"),
            ));
        }
        filled += n;
    }
    Ok(buf)
}

/// The first buffer of a read, and the least it grows by.
const READ_STEP: usize = 64 * 1024;

/// Write one length-prefixed message.
pub async fn write_message<M: Wire, T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    msg: &M,
) -> io::Result<()> {
    let bytes = msg.encode().map_err(invalid)?;
    with_deadline(async {
        io.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
        io.write_all(&bytes).await?;
        io.flush().await
    })
    .await
}

impl<Req, Resp> request_response::Codec for WireCodec<Req, Resp>
where
    Req: Wire + Send + Sync + 'static,
    Resp: Wire + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oda_protocol::messages::{BlobRequest, FactRequest};
    use oda_protocol::{BlobId, ExprId};

    #[tokio::test]
    async fn round_trip_and_limits() {
        let msg = FactRequest::GetFacts(ExprId([1; 32]));
        let mut buf = Vec::new();
        write_message(&mut buf, &msg).await.unwrap();
        let back: FactRequest = read_message(&mut buf.as_slice()).await.unwrap();
        assert_eq!(back, msg);

        // A length prefix above the limit is refused before reading the body.
        let mut huge = (u32::MAX).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        let err = read_message::<BlobRequest, _>(&mut huge.as_slice())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("exceeds the limit"), "{err}");

        // Truncated and garbage bodies are errors, not panics.
        let req = BlobRequest {
            blob: BlobId([2; 32]),
            offset: 0,
            len: 10,
        };
        let mut buf = Vec::new();
        write_message(&mut buf, &req).await.unwrap();
        buf.truncate(buf.len() - 3);
        assert!(read_message::<BlobRequest, _>(&mut buf.as_slice())
            .await
            .is_err());
        let garbage = [0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff];
        assert!(read_message::<FactRequest, _>(&mut garbage.as_slice())
            .await
            .is_err());
    }

    #[tokio::test]
    async fn the_buffer_grows_with_the_bytes_that_arrive_not_the_announced_length() {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        // 4 MiB announced, 100 bytes sent, then the stream ends.
        let (a, mut b) = tokio::io::duplex(1 << 16);
        tokio::io::AsyncWriteExt::write_all(&mut b, &[7; 100])
            .await
            .unwrap();
        drop(b);
        let err = read_body(&mut a.compat(), 4 << 20).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("after 100 of 4194304"), "{err}");

        // A whole message arriving in small pieces is read exactly.
        let (a, mut b) = tokio::io::duplex(1000);
        let body: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let sent = body.clone();
        let writer = tokio::spawn(async move {
            for piece in sent.chunks(777) {
                tokio::io::AsyncWriteExt::write_all(&mut b, piece)
                    .await
                    .unwrap();
            }
        });
        let got = read_body(&mut a.compat(), body.len()).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, body);
        assert!(got.capacity() <= body.len(), "{}", got.capacity());
    }

    #[tokio::test]
    async fn fact_and_blob_requests_longer_than_64_bytes_are_refused_at_the_prefix() {
        for announced in [65u32, 4 << 20] {
            let mut bytes = announced.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0; 70]);
            let err = read_message::<FactRequest, _>(&mut bytes.as_slice())
                .await
                .unwrap_err();
            assert!(err.to_string().contains("limit of 64"), "{err}");
            let err = read_message::<BlobRequest, _>(&mut bytes.as_slice())
                .await
                .unwrap_err();
            assert!(err.to_string().contains("limit of 64"), "{err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        // The other end stays open and sends two bytes of a four-byte prefix.
        let (a, mut b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut b, &[0, 0])
            .await
            .unwrap();
        let err = read_message::<FactRequest, _>(&mut a.compat())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
