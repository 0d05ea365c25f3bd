"""Priors before they are asked for: a new study of a patient brings the patient's earlier studies back to the first tier.

When the first instance of a study the DICOM index has not seen arrives for
a patient (through any ingress: the gateway, the mount, S3, migration: they
all commit through the engine with the standard indexers), the patient's
most recent earlier studies (``[lifecycle] prior_studies``, 0 for all) that
sit on a colder tier are promoted, so the radiologist's comparison opens at
first-tier speed.

Guarantees:

* **nothing on the write path but one small index entry**:
  :class:`PriorsIndexer` runs inside the ingest's commit transaction and
  only writes a request (``settings`` key ``priors-request\\0BUCKET\\0PID``),
  durable with the instance that caused it. Resolving it (which instances,
  on which tier) is done by :func:`plan_priors`, a move planner of the
  engine's mover (:meth:`objfs.store.Store.add_move_planner`): the moves
  loop of ``objfs serve`` (and ``objfs tier promote``-style passes through
  ``run_queued_moves``) queues each cold instance with ``queue_move`` and
  moves it in the same pass;
* **rate-limited**: a patient's priors are promoted at most once per
  lifecycle day (``[lifecycle] day_seconds``): the planner marks the day it
  queued something, and a new study within that day writes no request (a
  request that found nothing cold does not count);
* **policy in the engine's config**: ``[lifecycle] promote_priors`` (default
  on when the store has a colder tier), ``prior_studies`` (default 3),
  ``prior_modalities`` (default all: with ``["CT", "MR"]`` only the
  instances of those modalities come back, and ``prior_studies`` counts
  only the studies that have some); promoted versions stay on the first tier for ``promoted_days`` before the
  rules move them again (:mod:`objfs.store.lifecycle`).

This module reads the DICOM index (:mod:`objfs.dicom.index`) and changes
nothing in it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from objfs.dicom.index import _instances, _k, _last_part, _prefix, _series
from objfs.store.tiers import tier_of_record

if TYPE_CHECKING:
    from objfs.store.engine import Store
    from objfs.store.index import Txn

__all__ = ["PRIORS_DONE", "PRIORS_REQUEST", "PriorsIndexer", "plan_priors", "prior_versions", "register"]

log = logging.getLogger(__name__)

#: ``settings`` key prefixes: a patient's pending request, and when the patient's priors were last requested.
PRIORS_REQUEST = b"priors-request\0"
PRIORS_DONE = b"priors-done\0"


def _patient_key(bucket: str, pid: str) -> bytes:
    return bucket.encode() + b"\0" + pid.encode()[:128].replace(b"\0", b" ")


class PriorsIndexer:
    """Notes, in the ingest's transaction, that a patient's priors should come back to the first tier."""

    databases: tuple[str, ...] = ()

    def __init__(self, store: Store) -> None:
        self.store = store

    def extract(self, head: bytes, key: str) -> dict[str, Any] | None:
        return None

    def on_change(self, txn: Txn, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        lifecycle = self.store.config.lifecycle
        if not lifecycle.promote_priors or new is None or new.get("delete_marker"):
            return
        if old is not None and old.get("id") == new.get("id"):
            return  # the same version changed (moved, locked, renamed): no new instance
        tags = new.get("dicom") or {}
        pid, study = str(tags.get("PatientID") or ""), str(tags.get("StudyInstanceUID") or "")
        if not pid or not study:
            return
        bucket = new["bucket"]
        # The DICOM index (registered before this one) counts this instance already: 1 means a study new here.
        if txn.get("dicom", _k(b"q", bucket, pid, study)) != 1:
            return
        patient = _patient_key(bucket, pid)
        now = self.store.clock.now()
        last = txn.get("settings", PRIORS_DONE + patient)
        if last is not None and now - last.get("t", 0) < lifecycle.day_seconds:
            return  # the patient's priors were promoted less than a day ago
        txn.put("settings", PRIORS_REQUEST + patient, {"bucket": bucket, "pid": pid, "study": study, "t": now})


def prior_versions(store: Store, bucket: str, pid: str, study: str) -> list[dict[str, Any]]:
    """The records of the patient's most recent earlier studies (not ``study``) that are on a colder tier.

    With ``prior_modalities``, only the instances of those modalities, and
    only the studies holding some count towards ``prior_studies``.
    """
    limit = store.config.lifecycle.prior_studies
    modalities = set(store.config.lifecycle.prior_modalities)
    with store.index.read() as txn:
        studies = []
        for key, _ in txn.scan("dicom", _prefix(b"q", bucket, pid)):
            uid = _last_part(key)
            if uid != study:
                entry = txn.get("dicom", _k(b"t", bucket, uid)) or {"a": {}}
                if modalities and not modalities & set(entry.get("mods") or {}):
                    continue  # none of the modalities asked for
                studies.append((str(entry["a"].get("StudyDate") or ""), uid, entry))
        studies.sort(key=lambda s: s[:2], reverse=True)  # the most recent first (StudyDate is YYYYMMDD)
        chosen = studies[:limit] if limit else studies
        refs = [
            (inst["k"], inst["id"])
            for _, uid, entry in chosen
            for series, se in _series(txn, bucket, uid, {})
            for inst in _instances(txn, bucket, uid, series, {}, entry, se)
            if not modalities or str(inst["d"].get("Modality") or "") in modalities
        ]
    hot = store.config.hot.name
    cold = []
    for key, object_id in refs:
        record = store._record_by_id(bucket, key, object_id)
        if record is not None and not record.get("delete_marker") and tier_of_record(record, hot) != hot:
            cold.append(record)
    return cold


def plan_priors(store: Store) -> list[str]:
    """Queue the promotion of every pending request's priors (a move planner); returns what was queued."""
    hot = store.config.hot.name
    with store.index.read() as txn:
        requests = list(txn.scan("settings", PRIORS_REQUEST))
    queued: list[str] = []
    for raw_key, request in requests:
        mine = [
            f"{record['bucket']}/{record['key']}"
            for record in prior_versions(store, request["bucket"], request["pid"], request["study"])
            if store.queue_move(record, hot, "prior")
        ]
        queued += mine

        def done(txn: Txn, raw_key: bytes = raw_key, request: dict[str, Any] = request, promoted: bool = bool(mine)) -> None:
            if promoted:  # the day's promotion of this patient (a request that found nothing cold does not count)
                txn.put("settings", PRIORS_DONE + raw_key[len(PRIORS_REQUEST) :], {"t": store.clock.now()})
            current = txn.get("settings", raw_key)
            if current is not None and current.get("t") == request.get("t"):  # a newer request stays
                txn.delete("settings", raw_key)

        store.index.commit(done)
        if mine:
            log.info("priors of patient %s: %d versions queued for the first tier", request["pid"], len(mine))
    return queued


def register(store: Store) -> Store:
    """Register the priors indexer and planner with ``store`` (after the DICOM index's); returns it. Idempotent."""
    store.register_indexer(PriorsIndexer(store))
    store.add_move_planner(plan_priors)
    return store
