"""Running the sidecar: in a trio nursery beside other work (as ``objfs serve`` does), and with several workers."""

from __future__ import annotations

import json

import trio
from s3helpers import Key, create_key, make_client, start_server

from objfs.store.keys import KeyRing
from s3sidecar import serve_s3


async def test_serve_s3_in_a_nursery_shares_an_open_store(store):
    key = KeyRing.of_store(store.root).create("nursery")
    store.create_bucket("shared")
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve_s3(store, "127.0.0.1", 0, shutdown_trigger=done.wait, task_status=task_status)
        )
        url = binds[0]

        def talk() -> bytes:
            s3 = make_client(url, Key(key.access_key, key.secret_key))
            s3.put_object(Bucket="shared", Key="k", Body=b"over s3")
            return s3.get_object(Bucket="shared", Key="k")["Body"].read()

        assert await trio.to_thread.run_sync(talk) == b"over s3"
        done.set()
    # The store was lent, not given: still open and holding the object.
    assert store.get_object_bytes("shared", "k") == b"over s3"


def test_two_worker_processes_share_the_store(store_path):
    server = start_server(store_path, "--workers", "2")
    try:
        s3 = make_client(server.url, create_key(store_path, "--name", "w2"))
        s3.create_bucket(Bucket="workers")
        for i in range(20):
            s3.put_object(Bucket="workers", Key=f"k{i}", Body=json.dumps(i).encode())
        assert [json.loads(s3.get_object(Bucket="workers", Key=f"k{i}")["Body"].read()) for i in range(20)] == list(range(20))
        assert s3.list_objects_v2(Bucket="workers")["KeyCount"] == 20
    finally:
        server.stop()
