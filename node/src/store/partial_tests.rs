//! Tests of verified ranges and partial blobs: every piece of a blob encoded
//! by one real store and decoded into another, bad bytes caught at their
//! chunk group, interrupted fetches resumed from what is on disk.

use std::fs;
use std::path::Path;

use oda_protocol::codec::limits;
use oda_protocol::BlobId;

use super::*;

const MIB: u64 = 1 << 20;

fn open(dir: &Path) -> Store {
    Store::open(StoreConfig::new(dir.to_path_buf(), 1 << 34))
        .expect("open store")
        .0
}

fn bytes(n: u64) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 4099) as u8).collect()
}

/// Encode each missing piece of `id` at `from` and write it into `partial`.
fn copy_pieces(from: &Store, id: &BlobId, partial: &PartialBlob) {
    for (offset, len) in partial.missing() {
        let (total, encoded) = from.encode_range(id, offset, len.into()).unwrap();
        assert_eq!(total, partial.size());
        partial.write_piece(offset, len, &encoded).unwrap();
    }
}

#[test]
fn every_size_travels_verified_and_keeps_its_outboard() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (from, to) = (open(a.path()), open(b.path()));
    let group = limits::BLOB_CHUNK_GROUP as u64;
    for size in [
        0,
        1,
        1023,
        1024,
        group,
        group + 1,
        MIB,
        MIB + 1,
        3 * MIB + 5,
    ] {
        let data = bytes(size);
        let id = from.put_blob(&data).unwrap();
        let partial = to.partial_blob(id, size).unwrap();
        let pieces = partial.missing();
        assert_eq!(
            pieces.len() as u64,
            size.div_ceil(MIB).max(1),
            "size {size}"
        );
        copy_pieces(&from, &id, &partial);
        assert_eq!(partial.finish().unwrap(), id);
        assert_eq!(to.blob_size(&id), Some(size));
        let got = fs::read(to.blob_path(&id).unwrap()).unwrap();
        assert!(got == data, "size {size}: bytes differ");
        // Both stores now keep the tree's hashes for blobs of more than one group.
        for store in [&from, &to] {
            assert_eq!(
                store.outboard_file(&id).exists(),
                size > group,
                "size {size}"
            );
        }
        // The fetched copy serves the same encoding as the original.
        let (offset, len) = pieces[pieces.len() - 1];
        assert_eq!(
            to.encode_range(&id, offset, len.into()).unwrap(),
            from.encode_range(&id, offset, len.into()).unwrap()
        );
    }
    assert!(fs::read_dir(b.path().join("partial"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn the_first_and_last_pieces_come_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let partial = store.partial_blob(BlobId([1; 32]), 4 * MIB + 10).unwrap();
    let m = MIB as u32;
    assert_eq!(
        partial.missing(),
        vec![(0, m), (4 * MIB, 10), (MIB, m), (2 * MIB, m), (3 * MIB, m)]
    );
}

#[test]
fn a_bad_chunk_is_caught_at_its_chunk_group_and_nothing_else_is_lost() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (from, to) = (open(a.path()), open(b.path()));
    let size = 2 * MIB + 100;
    let id = from.put_blob(&bytes(size)).unwrap();
    let partial = to.partial_blob(id, size).unwrap();
    let (total, mut encoded) = from.encode_range(&id, MIB, MIB).unwrap();
    assert_eq!(total, size);
    // The encoding interleaves hash pairs with the data, so flip a byte near
    // the end: it lies in the piece's last chunk group.
    let at = encoded.len() - 10;
    encoded[at] ^= 1;
    let err = partial.write_piece(MIB, MIB as u32, &encoded).unwrap_err();
    let last_group = 2 * MIB - limits::BLOB_CHUNK_GROUP as u64;
    match &err {
        StoreError::BadPiece { blob, reason } => {
            assert_eq!(*blob, id);
            assert!(reason.contains(&format!("byte {last_group}")), "{reason}");
        }
        other => panic!("expected BadPiece, got {other:?}"),
    }
    assert!(partial.missing().contains(&(MIB, MIB as u32)));
    // Short and overlong answers are refused too.
    let (_, good) = from.encode_range(&id, MIB, MIB).unwrap();
    let short = partial.write_piece(MIB, MIB as u32, &good[..good.len() - 1]);
    assert!(
        matches!(short, Err(StoreError::BadPiece { .. })),
        "{short:?}"
    );
    let long = partial.write_piece(MIB, MIB as u32, &[&good[..], b"x"].concat());
    assert!(
        matches!(&long, Err(StoreError::BadPiece { reason, .. }) if reason.contains("1 bytes past")),
        "{long:?}"
    );
    // Unfinished: finishing fails and keeps the files; then the rest completes.
    let partial = {
        let err = to.partial_blob(id, size).unwrap().finish().unwrap_err();
        assert!(err.to_string().contains("has not been fetched"), "{err}");
        to.partial_blob(id, size).unwrap()
    };
    copy_pieces(&from, &id, &partial);
    partial.finish().unwrap();
    assert!(to.has_blob(&id));
}

#[test]
fn an_interrupted_fetch_resumes_with_what_is_still_valid_on_disk() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let from = open(a.path());
    let size = 5 * MIB + 3;
    let id = from.put_blob(&bytes(size)).unwrap();
    let data_path = b.path().join("partial").join(format!("{id}-{size}"));
    {
        let to = open(b.path());
        let partial = to.partial_blob(id, size).unwrap();
        // Pieces 0, 5 (the last) and 1, then the fetch stops.
        for (offset, len) in partial.missing().into_iter().take(3) {
            let (_, encoded) = from.encode_range(&id, offset, len.into()).unwrap();
            partial.write_piece(offset, len, &encoded).unwrap();
        }
    }
    // A torn write in piece 1 (as a crash may leave), then a restart.
    let mut on_disk = fs::read(&data_path).unwrap();
    on_disk[(MIB + 5) as usize] ^= 0xff;
    fs::write(&data_path, on_disk).unwrap();
    let to = open(b.path());
    let partial = to.partial_blob(id, size).unwrap();
    let m = MIB as u32;
    assert_eq!(
        partial.missing(),
        vec![(MIB, m), (2 * MIB, m), (3 * MIB, m), (4 * MIB, m)]
    );
    copy_pieces(&from, &id, &partial);
    partial.finish().unwrap();
    assert_eq!(
        BlobId::of(&fs::read(to.blob_path(&id).unwrap()).unwrap()),
        id
    );
    // Another size for the same blob replaces the old partial files.
    let other = to.partial_blob(BlobId([2; 32]), 3 * MIB).unwrap();
    drop(other);
    let _ = to.partial_blob(BlobId([2; 32]), 2 * MIB).unwrap();
    let names: Vec<String> = fs::read_dir(b.path().join("partial"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| n.contains(&format!("-{}", 2 * MIB))),
        "{names:?}"
    );
}

#[test]
fn outboards_go_with_their_blob_and_are_rebuilt_when_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let size = 2 * MIB;
    let id = store.put_blob(&bytes(size)).unwrap();
    let first = store.encode_range(&id, 0, MIB).unwrap();
    let outboard = store.outboard_file(&id);
    // A truncated outboard is recomputed, not served.
    fs::write(&outboard, b"short").unwrap();
    assert_eq!(store.encode_range(&id, 0, MIB).unwrap(), first);
    store.remove_blob(&id).unwrap();
    assert!(!outboard.exists());
    // An outboard whose blob is gone is deleted at the next open.
    let id = store.put_blob(&bytes(size)).unwrap();
    store.encode_range(&id, MIB, MIB).unwrap();
    let orphan = dir
        .path()
        .join("outboards")
        .join(BlobId([3; 32]).to_string());
    fs::copy(store.outboard_file(&id), &orphan).unwrap();
    drop(store);
    let (store, report) = Store::open(StoreConfig::new(dir.path().to_path_buf(), 1 << 34)).unwrap();
    assert_eq!(report.orphan_outboards_removed, 1);
    assert!(!orphan.exists());
    assert!(store.outboard_file(&id).exists());
}

#[test]
fn ranges_off_the_chunk_groups_or_past_the_end_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let size = 3 * MIB;
    let id = store.put_blob(&bytes(size)).unwrap();
    for (offset, len, says) in [
        (1, MIB, "not a multiple"),
        (0, MIB + 1, "exceeds"),
        (0, 1000, "neither a multiple"),
        (size, 10, "past the end"),
        (MIB, 0, "empty"),
    ] {
        match store.encode_range(&id, offset, len) {
            Err(StoreError::BadRange(why)) => assert!(why.contains(says), "{offset}+{len}: {why}"),
            other => panic!("{offset}+{len}: {other:?}"),
        }
    }
    // A range past the end stops at the end.
    let (total, tail) = store.encode_range(&id, 2 * MIB, MIB).unwrap();
    assert_eq!(total, size);
    assert!(tail.len() as u64 > MIB);
    assert!(matches!(
        store.encode_range(&BlobId([4; 32]), 0, MIB),
        Err(StoreError::BlobNotFound(_))
    ));
}

/// The encoding is exactly what docs/protocol.md describes, checked with
/// BLAKE3's own subtree functions rather than bao-tree: a 40 KiB blob is three
/// chunk groups (16 + 16 + 8 KiB); the top node splits after 32 chunks, its
/// left child after 16.
#[test]
fn the_range_encoding_is_blake3s_tree_in_pre_order() {
    use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let group = limits::BLOB_CHUNK_GROUP;
    let data = bytes(40 * 1024);
    let id = store.put_blob(&data).unwrap();
    let (total, encoded) = store.encode_range(&id, 0, MIB).unwrap();
    assert_eq!(total, data.len() as u64);
    let cv = |offset: usize, end: usize| {
        blake3::Hasher::new()
            .set_input_offset(offset as u64)
            .update(&data[offset..end])
            .finalize_non_root()
    };
    let groups = [
        cv(0, group),
        cv(group, 2 * group),
        cv(2 * group, data.len()),
    ];
    let left = merge_subtrees_non_root(&groups[0], &groups[1], Mode::Hash);
    assert_eq!(
        merge_subtrees_root(&left, &groups[2], Mode::Hash).as_bytes(),
        &id.0,
        "the top of the tree is the blob id"
    );
    // Top pair, the left node's pair, then the three groups' bytes.
    let expected = [&left[..], &groups[2], &groups[0], &groups[1], &data].concat();
    assert!(
        encoded == expected,
        "encoding differs from the documented layout"
    );
    // The last group alone: the top pair, then its bytes (the left node's
    // pair is not on its way).
    let (_, tail) = store.encode_range(&id, 2 * group as u64, MIB).unwrap();
    let expected = [&left[..], &groups[2], &data[2 * group..]].concat();
    assert!(
        tail == expected,
        "tail encoding differs from the documented layout"
    );
}
