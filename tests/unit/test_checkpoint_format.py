"""The checkpoint's Merkle tree and signed bytes: fixed layouts an outside tool can recompute."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    Head,
    add_position,
    check_file,
    encode_checkpoint,
    generate_key,
    head_leaf,
    heads_root,
    load_checkpoint,
    load_private_key,
    load_public_key,
    merkle_root,
    positions_digest,
    public_key_hex,
    signed_message,
)

# The test vectors of RFC 6962's reference implementation (Certificate Transparency):
# the roots of the trees over the first n of these leaves.
RFC6962_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
RFC6962_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def rfc6962_split(leaves: list[bytes]) -> bytes:
    """RFC 6962's own definition: split at the largest power of two below n."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + rfc6962_split(leaves[:k]) + rfc6962_split(leaves[k:])).digest()


@pytest.mark.parametrize("size", range(len(RFC6962_ROOTS)))
def test_the_merkle_root_matches_rfc_6962(size: int) -> None:
    assert merkle_root(RFC6962_LEAVES[:size]).hex() == RFC6962_ROOTS[size]


def test_pairing_level_by_level_builds_the_rfc_tree_for_every_size() -> None:
    leaves = [n.to_bytes(2, "big") for n in range(70)]
    for size in range(1, len(leaves) + 1):
        assert merkle_root(leaves[:size]) == rfc6962_split(leaves[:size])


def test_a_head_leaf_is_stream_id_version_hash_and_positions() -> None:
    stream = UUID("00112233-4455-6677-8899-aabbccddeeff")

    leaf = head_leaf(stream, 7, b"\xab" * 32, b"\xcd" * 32)
    version_1 = head_leaf(stream, 7, b"\xab" * 32)

    assert leaf == stream.bytes + b"\x00" * 7 + b"\x07" + b"\xab" * 32 + b"\xcd" * 32
    assert version_1 == leaf[:-32]


def test_a_heads_positions_are_the_sha256_of_its_events_positions_as_int8() -> None:
    digest = positions_digest()
    for position in (3, 70_000, 2**40):
        digest.update(add_position(position))

    expected = b"".join(p.to_bytes(8, "big") for p in (3, 70_000, 2**40))
    assert digest.digest() == hashlib.sha256(expected).digest()


def sample(key: Ed25519PrivateKey, format_version: int = FORMAT_VERSION) -> Checkpoint:
    heads = [
        Head(
            stream_id=UUID(int=n),
            version=n,
            hash=f"{n:02x}" * 32,
            positions=f"{n + 10:02x}" * 32 if format_version >= 2 else None,
        )
        for n in (1, 2)
    ]
    unsigned = Checkpoint(
        format_version=format_version,
        created_at=datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        position=42,
        event_count=40,
        stream_count=2,
        merkle_root=heads_root(heads).hex(),
        public_key=public_key_hex(key.public_key()),
        signature="00" * 64,
        heads=heads,
    )
    return Checkpoint(
        **{
            **{f: getattr(unsigned, f) for f in unsigned.__struct_fields__},
            "signature": key.sign(signed_message(unsigned)).hex(),
        }
    )


def test_the_signature_covers_every_signed_field_in_a_fixed_layout() -> None:
    checkpoint = sample(Ed25519PrivateKey.generate())

    assert signed_message(checkpoint) == (
        b"credit-ledger-checkpoint\x00"
        + (2).to_bytes(4, "big")
        + (42).to_bytes(8, "big")
        + (40).to_bytes(8, "big")
        + (2).to_bytes(8, "big")
        + bytes.fromhex(checkpoint.merkle_root)
        + (1_767_225_600_000_001).to_bytes(8, "big")  # 2026-01-01T00:00:00.000001Z
    )
    assert check_file(checkpoint) == []


@pytest.mark.parametrize("format_version", [1, 2])
def test_a_written_checkpoint_reads_back_unchanged(tmp_path: Path, format_version: int) -> None:
    checkpoint = sample(Ed25519PrivateKey.generate(), format_version)
    path = tmp_path / "checkpoint.json"
    path.write_bytes(encode_checkpoint(checkpoint))

    assert load_checkpoint(path) == checkpoint
    assert check_file(checkpoint) == []
    assert ('"positions"' in path.read_text()) == (format_version == 2)
    assert '"created_at": "2026-01-01T00:00:00.000001Z"' in path.read_text()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda text: text.replace('"position": 42', '"position": -1'), "Expected `int` >= 0"),
        (lambda text: text.replace("00:00:00.000001Z", "00:00:00.000001"), "timezone"),
        (lambda text: text.replace('"format_version": 2', '"format_version": 3'), "version 3"),
        (lambda text: text[:-20], "not a checkpoint file"),
    ],
)
def test_a_damaged_file_is_refused_with_the_reason(
    tmp_path: Path, change: object, why: str
) -> None:
    path = tmp_path / "checkpoint.json"
    path.write_text(change(encode_checkpoint(sample(Ed25519PrivateKey.generate())).decode()))  # type: ignore[operator]

    with pytest.raises(CheckpointError, match=why):
        load_checkpoint(path)


def test_a_key_file_of_the_wrong_kind_says_which_file_is_wanted(tmp_path: Path) -> None:
    """The library's words were the message: "non-hexadecimal number found in fromhex()
    arg at position 0", "Unable to load PEM file. See https://cryptography.io/…
    MalformedFraming" (a newcomer's review)."""
    private = tmp_path / "signing"
    public = generate_key(private)
    other = tmp_path / "notes.txt"
    other.write_text("not a key\n")

    assert load_public_key(tmp_path / "signing.pub") == public
    assert load_private_key(private).public_key() == public
    with pytest.raises(CheckpointError) as swapped_public:
        load_public_key(private)
    with pytest.raises(CheckpointError) as not_public:
        load_public_key(other)
    with pytest.raises(CheckpointError) as swapped_private:
        load_private_key(tmp_path / "signing.pub")
    with pytest.raises(CheckpointError) as not_private:
        load_private_key(other)
    with pytest.raises(CheckpointError) as missing:
        load_private_key(tmp_path / "missing")

    assert str(swapped_public.value) == (
        f"{private} is a private key: --public-key takes FILE.pub (an auditor needs no private key)"
    )
    assert str(not_public.value) == (
        f"{other} is not a public key: --public-key takes FILE.pub of `ledger audit keygen "
        "--out FILE` (PEM, -----BEGIN PUBLIC KEY-----) or the 64 hex digits it printed"
    )
    assert str(swapped_private.value) == (
        f"{tmp_path / 'signing.pub'} is a public key: --key takes the private key, the FILE "
        "`ledger audit keygen --out FILE` wrote (not FILE.pub)"
    )
    assert str(not_private.value) == (
        f"{other} is not a private key: --key takes the FILE `ledger audit keygen --out FILE` "
        "wrote (PEM, -----BEGIN PRIVATE KEY-----)"
    )
    assert str(missing.value) == f"cannot read {tmp_path / 'missing'}: No such file or directory"


def test_a_key_that_cannot_be_written_names_the_file_and_why(tmp_path: Path) -> None:
    """It was "cannot write the key: [Errno 2] No such file or directory: '…'"."""
    out = tmp_path / "no-such-folder" / "signing"

    with pytest.raises(CheckpointError) as refused:
        generate_key(out)

    assert str(refused.value) == f"cannot write {out}: No such file or directory"
