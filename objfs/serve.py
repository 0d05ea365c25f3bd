"""``objfs serve``: the whole appliance in one trio process.

One :class:`~objfs.store.Store` (LMDB must be opened once per process) is
shared by the S3 sidecar, the FUSE mount, the DICOM gateway (pynetdicom runs
its own threads), the DICOMweb front (when ``[dicomweb] port`` is set) and a background loop that heals queued objects and
finishes interrupted garbage collection. SIGTERM or SIGINT stops everything
and unmounts cleanly; if any front stops on its own, the others are stopped
too, so a service manager sees the failure and restarts the whole appliance.
This module is the composition root; ``objfs serve``'s arguments are parsed
in :mod:`objfs.cli.serve`.
"""

from __future__ import annotations

import logging
import signal
import threading
from functools import partial
from pathlib import Path
from typing import Any

import trio

from objfs import workers
from objfs.stores import Store

log = logging.getLogger("objfs.serve")
SHUTDOWN_GRACE = 60.0  # seconds the fronts get to finish in-flight work after a stop


async def _until_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            stop.set()
            return


async def _run_then_stop(stop: trio.Event, fn: Any, *args: Any, done: trio.Event | None = None, **kwargs: Any) -> None:
    try:
        await fn(*args, **kwargs)
    finally:
        if done is not None:
            done.set()
        stop.set()


async def serve(
    store_path: Path,
    *,
    mount: Path | None = None,
    allow_other: bool = False,
    host: str | None = None,
    port: int | None = None,
    dicom: bool = True,
    dicom_port: int | None = None,
    on_ready: Any = None,
) -> None:
    """Run every front until a signal or until one of them stops."""
    store = Store.open(store_path)
    stop = trio.Event()
    dicom_stop = threading.Event()
    limiter = trio.CapacityLimiter(2)
    mount_ready, mount_done = trio.Event(), trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            try:
                await _start_fronts(
                    nursery,
                    store,
                    stop,
                    dicom_stop,
                    limiter,
                    mount_ready,
                    mount_done,
                    mount=mount,
                    allow_other=allow_other,
                    host=host,
                    port=port,
                    dicom=dicom,
                    dicom_port=dicom_port,
                    on_ready=on_ready,
                )
                await stop.wait()
            finally:
                # Whatever ended the run (a signal, a front that stopped or failed),
                # every front is told to stop before the nursery waits for them:
                # S3 on its shutdown trigger, the gateway on its event (its thread
                # is waited for, never abandoned: it uses the store), the mount on
                # terminate if it is still live (terminating a closed pyfuse3
                # session crashes the process).
                stop.set()
                dicom_stop.set()
                if mount_ready.is_set() and not mount_done.is_set():
                    import pyfuse3

                    pyfuse3.terminate()
                nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE
    finally:
        dicom_stop.set()
        store.close()


async def _start_fronts(
    nursery: trio.Nursery,
    store: Store,
    stop: trio.Event,
    dicom_stop: threading.Event,
    limiter: trio.CapacityLimiter,
    mount_ready: trio.Event,
    mount_done: trio.Event,
    *,
    mount: Path | None,
    allow_other: bool,
    host: str | None,
    port: int | None,
    dicom: bool,
    dicom_port: int | None,
    on_ready: Any,
) -> None:
    """Start every front and the background tasks; ``mount_ready`` is set once mounted."""
    background: trio.Nursery = await nursery.start(_background_nursery)
    background.start_soon(_until_signal, stop)
    nursery.start_soon(_stop_background_on, stop, background)
    from s3sidecar.server import serve_s3

    s3_host = host or store.config.s3.host
    s3_port = store.config.s3.port if port is None else port
    addresses = await nursery.start(partial(serve_s3, store, s3_host, s3_port, shutdown_trigger=stop.wait))
    mounted = None
    if mount is not None:
        from objfs.fuse.mount import run_mount

        nursery.start_soon(
            partial(_run_then_stop, stop, run_mount, store, mount, allow_other=allow_other, ready=mount_ready, done=mount_done)
        )
        with trio.move_on_after(30):
            await mount_ready.wait()
        if not mount_ready.is_set():
            raise RuntimeError(f"the FUSE mount at {mount} did not come up")
        mounted = mount
    if dicom:
        from objfs.dicom.server import serve_dicom

        dicom_ready = threading.Event()
        run_gateway = partial(serve_dicom, store, port=dicom_port, ready_event=dicom_ready, stop_event=dicom_stop)
        nursery.start_soon(partial(_run_then_stop, stop, trio.to_thread.run_sync, run_gateway))
        # Short waits, so a gateway that fails to start (port taken) ends start-up at once.
        with trio.move_on_after(30):
            while not dicom_ready.is_set() and not stop.is_set():
                await trio.to_thread.run_sync(dicom_ready.wait, 0.1)
        if not dicom_ready.is_set():
            raise RuntimeError("the DICOM gateway did not come up")
        dicom_port = dicom_port or store.config.dicom.port
    dicomweb = None
    web = store.config.dicomweb
    if web.port is not None:
        from objfs.dicomweb.app import PREFIX, serve_dicomweb

        web_addresses = await nursery.start(
            partial(
                serve_dicomweb,
                store,
                web.host,
                web.port,
                bucket=web.bucket,
                cors_origins=web.cors_origins,
                shutdown_trigger=stop.wait,
            )
        )
        dicomweb = [a + PREFIX for a in web_addresses]
    workers.start(background, store, limiter)
    if on_ready is not None:
        on_ready(
            {
                "s3": addresses,
                "mount": str(mounted) if mounted else None,
                "dicom_port": dicom_port if dicom else None,
                "aet": store.config.dicom.aet,
                "dicomweb": dicomweb,
            }
        )


async def _stop_background_on(stop: trio.Event, background: trio.Nursery) -> None:
    await stop.wait()
    background.cancel_scope.cancel()


async def _background_nursery(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()


def serve_forever(store_path: Path, *, mount: Path | None = None, allow_other: bool = False, **kwargs: Any) -> int:
    """Blocking entry point (``objfs serve``, ``make run``); prints where each front listens."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def announce(banner: dict[str, Any]) -> None:
        print(f"objfs: S3 at {', '.join(banner['s3'])}", flush=True)
        if banner["mount"]:
            print(f"objfs: FUSE mount at {banner['mount']}", flush=True)
        if banner["dicom_port"]:
            print(f"objfs: DICOM gateway on port {banner['dicom_port']} (AE title {banner['aet']})", flush=True)
        if banner.get("dicomweb"):
            print(f"objfs: DICOMweb at {', '.join(banner['dicomweb'])}", flush=True)
        print("objfs: ready; Ctrl-C or SIGTERM stops and unmounts", flush=True)

    if mount is not None:
        mount.mkdir(parents=True, exist_ok=True)
    trio.run(partial(serve, store_path, mount=mount, allow_other=allow_other, on_ready=announce, **kwargs))
    return 0
