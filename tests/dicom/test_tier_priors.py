"""A new study promotes the patient's priors: real C-STOREs to a real gateway, the engine's mover does the moves.

The gateway only commits instances (the priors indexer notes a request in
the same transaction); the moves pass (``run_queued_moves``, as the moves
loop of ``objfs serve`` runs it) resolves the request and moves the
patient's most recent earlier studies from the warm tier back to the first
tier, bytes unchanged; other patients' studies stay where they are; a
second new study the same day promotes nothing again.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import dicom_scu as scu
import pytest
from dicomtest import configure, start_gateway, stop_gateway

from objfs.dicom.priors import PRIORS_REQUEST
from objfs.dicom.synth import write_study
from objfs.store.config import load_config
from objfs.stores import Store

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "store"))
from tierhelpers import tiered_store, unlock_tree  # noqa: E402


def _tiers(store, study_uid: str) -> set[str]:
    with store.index.read() as txn:
        records = [r for _, r in txn.scan_objects("pacs", study_uid + "/")]
    assert records
    return {store.tier_of(r) for r in records}


def _requests(store) -> list[dict]:
    with store.index.read() as txn:
        return [v for _, v in txn.scan("settings", PRIORS_REQUEST)]


def _digests(store, study_uid: str) -> dict[str, str]:
    with store.index.read() as txn:
        keys = [r["key"] for _, r in txn.scan_objects("pacs", study_uid + "/")]
    return {k: hashlib.sha256(store.get_object_bytes("pacs", k)).hexdigest() for k in keys}


@pytest.fixture
def priors_store(tmp_path: Path):
    root = tiered_store(tmp_path / "store", day_seconds=3600)
    with open(root / "objfs.toml", "a") as f:  # [lifecycle] is the file's last table
        f.write("prior_studies = 1\n")
    configure(root, allowed=["TESTSCU"])
    yield root
    unlock_tree(tmp_path)


def test_a_new_study_through_the_gateway_promotes_the_patients_most_recent_prior(priors_store: Path, tmp_path: Path) -> None:
    older, older_files = write_study(tmp_path / "a", instances=2, patient_id="P-PRIOR", study_date="20190105", seed=1)
    recent, recent_files = write_study(tmp_path / "b", instances=3, series=2, patient_id="P-PRIOR", study_date="20230611", seed=2)
    other, other_files = write_study(tmp_path / "c", instances=2, patient_id="P-OTHER", study_date="20230611", seed=3)
    new, new_files = write_study(tmp_path / "d", instances=2, patient_id="P-PRIOR", study_date="20250120", seed=4)
    again, again_files = write_study(tmp_path / "e", instances=1, patient_id="P-PRIOR", study_date="20250121", seed=5)
    gw = start_gateway(priors_store)
    try:
        assert scu.store_files(gw.port, older_files + recent_files + other_files) == [0] * 7
        with Store.open(priors_store) as store:
            assert store.config.lifecycle.promote_priors  # on by default: the store has a colder tier
            assert store.run_queued_moves()["moved"] == []  # the first studies had no cold priors
            assert _requests(store) == []
            before = {uid: _digests(store, uid) for uid in (older, recent, other)}
            for uid in (older, recent, other):  # years later, the rules have moved them to warm
                with store.index.read() as txn:
                    keys = [r["key"] for _, r in txn.scan_objects("pacs", uid + "/")]
                for key in keys:
                    store.move_version("pacs", key, tier="warm")
                assert _tiers(store, uid) == {"warm"}

        assert scu.store_files(gw.port, new_files) == [0, 0]  # the patient comes back
        with Store.open(priors_store) as store:
            (request,) = _requests(store)  # one request for the patient, not one per instance
            assert (request["pid"], request["study"]) == ("P-PRIOR", new)
            assert _tiers(store, recent) == {"warm"}  # the gateway moved nothing itself
            report = store.run_queued_moves()
            assert len(report["moved"]) == 3 and report["failed"] == []
            assert _tiers(store, recent) == {"hot"}  # the most recent prior (prior_studies = 1) ...
            assert _tiers(store, older) == {"warm"}  # ... not the older one
            assert _tiers(store, other) == {"warm"}  # nor another patient's study
            assert _tiers(store, new) == {"hot"}
            assert _requests(store) == [] and store.queued_moves() == []
            for uid in (older, recent, other):
                assert _digests(store, uid) == before[uid]
            with store.index.read() as txn:
                keys = [r["key"] for _, r in txn.scan_objects("pacs", recent + "/")]
            store.move_version("pacs", keys[0], tier="warm")

        assert scu.store_files(gw.port, again_files) == [0]  # another new study the same day
        with Store.open(priors_store) as store:
            assert _requests(store) == []  # once per patient per day
            assert store.run_queued_moves()["moved"] == []
            assert store.tier_of(store.head_object("pacs", keys[0]).record) == "warm"
    finally:
        err = stop_gateway(gw)
    assert "Traceback" not in err, err


def test_promote_priors_is_on_only_where_there_is_a_colder_tier(tmp_path: Path) -> None:
    tiered = tiered_store(tmp_path / "tiered")
    assert load_config(tiered).lifecycle.promote_priors
    text = (tiered / "objfs.toml").read_text()
    assert not load_config(tiered, text=text + "promote_priors = false\n").lifecycle.promote_priors
    from objfs.store import init_store

    init_store(tmp_path / "single").close()
    assert not load_config(tmp_path / "single").lifecycle.promote_priors
    unlock_tree(tmp_path)


def _to_warm(store, uid: str) -> None:
    with store.index.read() as txn:
        keys = [r["key"] for _, r in txn.scan_objects("pacs", uid + "/")]
    for key in keys:
        store.move_version("pacs", key, tier="warm")


def _tiers_by_modality(store, study_uid: str) -> dict[str, set[str]]:
    with store.index.read() as txn:
        records = [r for _, r in txn.scan_objects("pacs", study_uid + "/")]
    out: dict[str, set[str]] = {}
    for r in records:
        out.setdefault(r["dicom"]["Modality"], set()).add(store.tier_of(r))
    return out


def test_prior_modalities_choose_which_priors_come_back(tmp_path: Path) -> None:
    root = tiered_store(tmp_path / "store", day_seconds=3600)
    with open(root / "objfs.toml", "a") as f:  # [lifecycle] is the file's last table
        f.write('prior_studies = 1\nprior_modalities = ["CT", "MR"]\n')
    configure(root, allowed=["TESTSCU"])
    pid = "P-MODS"
    mixed, ct_files = write_study(tmp_path / "a1", instances=2, patient_id=pid, modality="CT", study_date="20220301", seed=11)
    _, ot_files = write_study(
        tmp_path / "a2", instances=2, patient_id=pid, modality="OT", study_date="20220301", seed=12, study_uid=mixed
    )
    cr_only, cr_files = write_study(tmp_path / "b", instances=2, patient_id=pid, modality="CR", study_date="20240909", seed=13)
    _, new_files = write_study(tmp_path / "c", instances=1, patient_id=pid, modality="MR", study_date="20250101", seed=14)
    gw = start_gateway(root)
    try:
        assert scu.store_files(gw.port, ct_files + ot_files + cr_files) == [0] * 6
        with Store.open(root) as store:
            assert store.config.lifecycle.prior_modalities == ("CT", "MR")
            store.run_queued_moves()
            for uid in (mixed, cr_only):
                _to_warm(store, uid)
            before = _digests(store, mixed)
        assert scu.store_files(gw.port, new_files) == [0]
        with Store.open(root) as store:
            report = store.run_queued_moves()
            assert len(report["moved"]) == 2 and report["failed"] == []
            # The more recent CR-only study is not a CT/MR prior: the CT/MR one counts as the one prior,
            # and only its CT instances come back.
            assert _tiers_by_modality(store, mixed) == {"CT": {"hot"}, "OT": {"warm"}}
            assert _tiers_by_modality(store, cr_only) == {"CR": {"warm"}}
            assert _digests(store, mixed) == before
    finally:
        err = stop_gateway(gw)
    assert "Traceback" not in err, err
    unlock_tree(tmp_path)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"CT"', "must be a list"),
        ('["ct"]', "did you mean 'CT'"),
        ('["CT", 3]', "not 3"),
        ('["CT", "CT"]', "twice"),
        ('["C T"]', "Modality codes"),
    ],
)
def test_prior_modalities_are_validated_loudly(tmp_path: Path, value: str, message: str) -> None:
    from objfs.store.errors import ConfigError

    root = tiered_store(tmp_path / "store")
    text = (root / "objfs.toml").read_text()
    assert load_config(root, text=text + "prior_modalities = []\n").lifecycle.prior_modalities == ()
    with pytest.raises(ConfigError, match=message):
        load_config(root, text=text + f"prior_modalities = {value}\n")
    unlock_tree(tmp_path)
