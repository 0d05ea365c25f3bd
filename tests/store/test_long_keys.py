"""Listings of keys and prefixes of every length a key may have (up to 1024 bytes).

The index keeps only the first 480 bytes of a long key (then a hash), so
these keys are not in key order inside the index; the listings must still
be exactly S3's: key order, prefixes of any length, delimiters, markers and
pages. Each listing is compared with a model computed from the key set.
"""

from __future__ import annotations

import pytest

from objfs.store import Store

SEG = "s" * 200  # a directory name of 200 bytes: three of them make a 600-byte path
DEEP = f"{SEG}/{SEG}/{SEG}/"  # 603 bytes: every key below it is hashed in the index
DEEPER = DEEP + f"{SEG}/" * 2  # 1005 bytes


def _keys() -> list[str]:
    keys = [
        "a.dcm",
        "z.dcm",
        f"{SEG}/short.dcm",
        # 470..500 bytes: kept whole in the index, beside hashed ones sharing their head.
        DEEP[:470] + "/k.dcm",
        DEEP[:476] + "/x",
        DEEP + "b.dcm",
        DEEP + "a.dcm",
        DEEP + "c/1.dcm",
        DEEP + "c/2.dcm",
        DEEP + "d",
        DEEP + "é.dcm",
        DEEPER + "one.dcm",
        DEEPER + "two.dcm",
        DEEPER[:1000] + "/0123456789012345678",  # 1020 bytes
    ]
    keys += [DEEP + f"many/{i:03d}" + "m" * i for i in range(30)]
    return keys


def model(keys: list[str], prefix: str, delimiter: str, start_after: str) -> list[tuple[str, str]]:
    """S3's answer in key order: ``(key, "key")`` and ``(common_prefix, "prefix")``."""
    out: list[tuple[str, str]] = []
    for key in sorted(k for k in keys if k.startswith(prefix)):
        if delimiter and (pos := key.find(delimiter, len(prefix))) >= 0:
            common = key[: pos + len(delimiter)]
            if common > start_after and (common, "prefix") not in out:
                out.append((common, "prefix"))
        elif key > start_after:
            out.append((key, "key"))
    return out


def listed(store: Store, prefix: str, delimiter: str, start_after: str, max_keys: int) -> list[tuple[str, str]]:
    """Every page of ``list_objects`` followed to the end, as :func:`model` writes it."""
    out: list[tuple[str, str]] = []
    marker = start_after
    for _ in range(1000):
        page = store.list_objects("pacs", prefix=prefix, delimiter=delimiter, start_after=marker, max_keys=max_keys)
        assert len(page.objects) + len(page.common_prefixes) <= max_keys
        out += sorted([(o.key, "key") for o in page.objects] + [(c, "prefix") for c in page.common_prefixes])
        if not page.truncated:
            return out
        assert page.next_marker
        marker = page.next_marker
    raise AssertionError("listing does not end")


@pytest.fixture
def long_store(store: Store) -> tuple[Store, list[str]]:
    store.create_bucket("pacs")
    keys = _keys()
    for key in keys:
        store.put_object("pacs", key, key[-20:].encode())
    return store, keys


@pytest.mark.parametrize(
    "prefix",
    ["", f"{SEG}/", DEEP[:470], DEEP[:479], DEEP[:480], DEEP[:481], DEEP, DEEP + "c/", DEEP + "many/0", DEEPER, DEEPER[:1000]],
)
@pytest.mark.parametrize("delimiter", ["", "/"])
def test_listings_of_long_keys_match_s3(long_store, prefix: str, delimiter: str) -> None:
    store, keys = long_store
    for start_after in ["", DEEP + "a.dcm", DEEP + "c/", DEEP + "many/010", DEEPER + "one.dcm", "zz"]:
        want = model(keys, prefix, delimiter, start_after)
        for max_keys in (1000, 3, 1):
            assert listed(store, prefix, delimiter, start_after, max_keys) == want, (prefix, start_after, max_keys)


def test_one_listing_is_in_key_order(long_store) -> None:
    store, keys = long_store
    page = store.list_objects("pacs", prefix=DEEP, max_keys=1000)
    assert [o.key for o in page.objects] == sorted(k for k in keys if k.startswith(DEEP))
    page = store.list_objects("pacs", prefix=DEEP, delimiter="/", max_keys=1000)
    assert [o.key for o in page.objects] == [DEEP + n for n in ("a.dcm", "b.dcm", "d", "é.dcm")]
    assert page.common_prefixes == [DEEP + "c/", DEEP + "many/", DEEP + f"{SEG}/"]


def test_versions_listing_and_prefix_rename_of_long_keys(long_store) -> None:
    store, keys = long_store
    versions = store.list_object_versions("pacs", prefix=DEEP + "c/")
    assert [v.key for v in versions.versions] == [DEEP + "c/1.dcm", DEEP + "c/2.dcm"]
    moved = store.rename_prefix("pacs", DEEP + "c/", DEEP + "e/")
    assert moved == 2
    assert store.get_object_bytes("pacs", DEEP + "e/2.dcm") == (DEEP + "c/2.dcm")[-20:].encode()
    assert [o.key for o in store.list_objects("pacs", prefix=DEEP + "c/").objects] == []
    assert [o.key for o in store.list_objects("pacs", prefix=DEEP + "e/").objects] == [DEEP + "e/1.dcm", DEEP + "e/2.dcm"]
