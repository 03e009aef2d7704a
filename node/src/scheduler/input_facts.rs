//! Input facts, shared by the requester and the worker: finding the signed
//! fact an input names (this node's store, then a peer likely to hold it,
//! then the mesh), checking that it gives the input's blob
//! ([`ResolvedInput::check`]) and keeping it once checked, since it is part
//! of the provenance of every fact that names it. Store calls run on the
//! blocking pool.

use libp2p::PeerId;
use oda_protocol::{ResolvedInput, SignedFact};

use crate::blocking::run as blocking;
use crate::network::Client;
use crate::store::Store;

/// The fact `input` names, checked against it: from the store, else asked
/// of `first` and then of the mesh (and then stored). The error says which
/// input and what is wrong.
pub(crate) async fn checked(
    store: &Store,
    client: &Client,
    input: &ResolvedInput,
    first: Option<PeerId>,
) -> Result<SignedFact, String> {
    let what = format!("input {:?} of {}", input.name, input.expr);
    let id = input.fact;
    let held = {
        let store = store.clone();
        blocking(move || store.fact(&id)).await?
    };
    let (fact, fetched) = match held {
        Some(fact) => (fact, false),
        None => {
            let found = client
                .find_fact(input.expr, id, first)
                .await
                .ok_or_else(|| {
                    format!("{what}: its fact {id} was found neither at the peer that named it nor in the mesh")
                })?;
            (found, true)
        }
    };
    // A stored fact's signature was checked when it was stored.
    let checked = if fetched {
        input.check(&fact)
    } else {
        input.matches(&fact)
    };
    checked.map_err(|e| format!("{what}: {e}"))?;
    if fetched {
        let (store, kept) = (store.clone(), fact.clone());
        blocking(move || store.put_fact(&kept))
            .await
            .map_err(|e| format!("cannot keep the fact of {what}: {e}"))?;
    }
    Ok(fact)
}
