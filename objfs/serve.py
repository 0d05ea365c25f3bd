"""``objfs serve``: the whole appliance in one trio process.

One :class:`~objfs.store.Store` (LMDB must be opened once per process) is
shared by the S3 sidecar, the FUSE mount, the DICOM gateway (pynetdicom runs
its own threads; with ``[dicom] processes`` > 1 it also starts worker
processes with store handles of their own, :mod:`objfs.dicom.processes`), the DICOMweb front (when ``[dicomweb] port`` is set) and a background loop that heals queued objects and
finishes interrupted garbage collection. SIGTERM or SIGINT stops everything
and unmounts cleanly; if any front stops on its own, the others are stopped
too, so a service manager sees the failure and restarts the whole appliance.
This module is the composition root; ``objfs serve``'s arguments are parsed
in :mod:`objfs.cli.serve`.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import sys
import threading
from functools import partial
from pathlib import Path
from typing import Any

import trio

from objfs import sdnotify, workers
from objfs.store.storelock import hold_shared
from objfs.stores import Store

log = logging.getLogger("objfs.serve")
SHUTDOWN_GRACE = 60.0  # seconds the fronts get to finish in-flight work after a stop


class FrontStopped(Exception):
    """A front stopped on its own (the mount was unmounted from outside, a server died): the run failed."""


async def _until_signal(stop: trio.Event, signalled: list[str]) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            log.info("signal %s: stopping", name)
            signalled.append(name)
            sdnotify.notify("STOPPING=1")
            stop.set()
            return


async def _reload_on_hangup(store: Store) -> None:
    """SIGHUP (``systemctl reload``): re-read objfs.toml and apply what is safe to change live."""
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            sdnotify.notify(f"RELOADING=1\nMONOTONIC_USEC={sdnotify.monotonic_usec()}")
            try:
                await trio.to_thread.run_sync(reload_config, store)
            except Exception as exc:  # a bad file keeps the running configuration
                log.error("reload: objfs.toml not applied: %s", exc)
            sdnotify.notify("READY=1")


def reload_config(store: Store) -> list[str]:
    """Apply objfs.toml's live settings to the running ``store``; returns what changed.

    Live: ``[lifecycle]`` (the engine reads it on every run), ``[replication]``
    (the sender takes its rate limit and interval at its next pass, and
    reconnects to its remotes, re-reading their definitions) and the DICOM
    gateway's calling-AE allowlist (``[dicom] allowed_aets``, checked for
    every new association; running ones go on). Access keys need no reload:
    ``keys.json`` is re-read whenever it changes. Everything else (tiers,
    drives, ports, TLS, AE titles, C-MOVE destinations) is bound when a front
    starts: a change there is logged as needing a restart and not applied, so
    a reload never drops the mount or a connection.
    """
    from dataclasses import fields, replace

    from objfs.store.config import load_config

    new = load_config(store.root)
    old = store.config
    applied = []
    live: dict[str, Any] = {}
    if new.lifecycle != old.lifecycle:
        live["lifecycle"] = new.lifecycle
        applied.append("lifecycle")
    if new.replication != old.replication:
        live["replication"] = new.replication
        applied.append("replication")
    dicom = old.dicom
    if new.dicom.allowed_aets != old.dicom.allowed_aets:
        dicom = replace(old.dicom, allowed_aets=new.dicom.allowed_aets)
        live["dicom"] = dicom
        applied.append("dicom allowlist")
    # A new object even when nothing changed: the replication sender sees the reload and reconnects.
    store.config = replace(old, **live)
    later = [
        f.name
        for f in fields(old)
        if f.name not in ("lifecycle", "replication", "dicom") and getattr(new, f.name) != getattr(old, f.name)
    ]
    if replace(new.dicom, allowed_aets=old.dicom.allowed_aets) != old.dicom:
        later.insert(0, "dicom")
    log.info("reload: applied %s", ", ".join(applied) or "nothing (no live setting changed)")
    if later:
        log.warning("reload: %s changed in objfs.toml; takes effect at the next restart", ", ".join(later))
    return applied


async def _watchdog(fronts: Any, interval: float) -> None:
    """Ping systemd's watchdog while every front is up; a hung loop or a dead front stops the pings."""
    while True:
        problems = [name for name, problem in fronts.problems().items() if problem]
        if not problems:
            sdnotify.notify("WATCHDOG=1")
        else:
            log.warning("watchdog: not pinging, fronts down: %s", ", ".join(problems))
        await trio.sleep(interval)


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
    admin_port: int | None = None,
    on_ready: Any = None,
) -> None:
    """Run every front until a signal or until one of them stops; holds the store lock shared meanwhile."""
    store_lock = hold_shared(store_path)
    try:
        store = Store.open(store_path)
    except BaseException:
        store_lock.release()
        raise
    stop = trio.Event()
    dicom_stop = threading.Event()
    limiter = trio.CapacityLimiter(2)
    mount_ready, mount_done = trio.Event(), trio.Event()
    signalled: list[str] = []
    try:
        async with trio.open_nursery() as nursery:
            try:
                await _start_fronts(
                    nursery,
                    store,
                    stop,
                    signalled,
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
                    admin_port=admin_port,
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
        store_lock.release()
    if not signalled:
        # Exit non-zero, so Restart=on-failure restarts the whole appliance.
        raise FrontStopped("a front stopped on its own (was the mount unmounted from outside?)")


async def _start_fronts(
    nursery: trio.Nursery,
    store: Store,
    stop: trio.Event,
    signalled: list[str],
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
    admin_port: int | None,
    on_ready: Any,
) -> None:
    """Start every front and the background tasks; ``mount_ready`` is set once mounted.

    The admin endpoint starts first, so ``/healthz`` answers and ``/readyz``
    says which front is still starting while the others come up.
    """
    background: trio.Nursery = await nursery.start(_background_nursery)
    background.start_soon(_until_signal, stop, signalled)
    background.start_soon(_reload_on_hangup, store)
    nursery.start_soon(_stop_background_on, stop, background)
    from objfs.admin.app import Fronts, is_mounted, serve_admin
    from s3sidecar.server import serve_s3

    fronts = Fronts()
    for name, wanted in (
        ("s3", True),
        ("fuse", mount is not None),
        ("dicom", dicom),
        ("dicomweb", store.config.dicomweb.port is not None),
    ):
        if wanted:
            fronts.expect(name)
    admin_host = store.config.admin.host
    admin_port = store.config.admin.port if admin_port is None else admin_port
    admin = await nursery.start(
        partial(_run_then_stop, stop, serve_admin, store, admin_host, admin_port, fronts=fronts, shutdown_trigger=stop.wait)
    )

    s3_host = host or store.config.s3.host
    s3_port = store.config.s3.port if port is None else port
    tls = {"certfile": store.config.s3.tls_certfile, "keyfile": store.config.s3.tls_keyfile}  # [s3] tls_*: HTTPS
    addresses = await nursery.start(partial(serve_s3, store, s3_host, s3_port, **tls, shutdown_trigger=stop.wait))
    fronts.watch("s3", lambda: "stopping" if stop.is_set() else None)
    mounted = None
    if mount is not None:
        from objfs.fuse.mount import run_mount

        nursery.start_soon(
            partial(
                _run_then_stop,
                stop,
                run_mount,
                store,
                mount,
                allow_other=allow_other,
                ready=mount_ready,
                done=mount_done,
                handle_signals=False,
            )
        )
        with trio.move_on_after(30):
            await mount_ready.wait()
        if not mount_ready.is_set():
            raise RuntimeError(f"the FUSE mount at {mount} did not come up")
        mounted = mount
        fronts.watch("fuse", lambda: None if not mount_done.is_set() and is_mounted(mount) else f"{mount} is not mounted")
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
        fronts.watch("dicom", lambda: "stopping" if dicom_stop.is_set() or stop.is_set() else None)
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
        fronts.watch("dicomweb", lambda: "stopping" if stop.is_set() else None)
    workers.start(background, store, limiter)
    sdnotify.notify("READY=1\nSTATUS=every front is up")
    interval = sdnotify.watchdog_interval()
    if interval is not None:
        background.start_soon(_watchdog, fronts, interval)
    if on_ready is not None:
        on_ready(
            {
                "s3": addresses,
                "mount": str(mounted) if mounted else None,
                "dicom_port": dicom_port if dicom else None,
                "aet": store.config.dicom.aet,
                "dicomweb": dicomweb,
                "admin": admin,
            }
        )


class StartupError(Exception):
    """The appliance cannot start (a port taken, ...): one line for the operator, no traceback."""


def check_port_free(host: str, port: int, what: str) -> None:
    """Raise StartupError naming ``what`` and the port when it cannot be listened on.

    Checked before any front starts, so a taken port is one clear line
    rather than a traceback from deep inside a server library.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            where = f"{host or '*'}:{port}"
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"{what} port {port} is in use ({where}); stop what listens there or choose another port"
                ) from None
            if exc.errno == errno.EACCES:
                raise StartupError(f"{what} port {port} needs privileges ({where}); use a port above 1023") from None
            raise StartupError(f"{what} cannot listen on {where}: {exc.strerror}") from None


def _address_in_use(exc: BaseException) -> OSError | None:
    """The EADDRINUSE error inside ``exc`` (an exception group from the nursery), if any."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _address_in_use(inner)
        if found is not None:
            return found
    cause = exc.__cause__ or exc.__context__
    return _address_in_use(cause) if cause is not None and cause is not exc else None


async def _stop_background_on(stop: trio.Event, background: trio.Nursery) -> None:
    await stop.wait()
    background.cancel_scope.cancel()


async def _background_nursery(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()


def serve_forever(store_path: Path, *, mount: Path | None = None, allow_other: bool = False, **kwargs: Any) -> int:
    """Blocking entry point (``objfs serve``, ``make run``); prints where each front listens."""
    from objfs.admin.journal import configure_logging

    configure_logging(logging.INFO)

    def announce(banner: dict[str, Any]) -> None:
        print(f"objfs: S3 at {', '.join(banner['s3'])}", flush=True)
        if banner["mount"]:
            print(f"objfs: FUSE mount at {banner['mount']}", flush=True)
        if banner["dicom_port"]:
            print(f"objfs: DICOM gateway on port {banner['dicom_port']} (AE title {banner['aet']})", flush=True)
        if banner.get("dicomweb"):
            print(f"objfs: DICOMweb at {', '.join(banner['dicomweb'])}", flush=True)
        if banner.get("admin"):
            print(f"objfs: admin (health, metrics, dashboard) at {', '.join(banner['admin'])}", flush=True)
        print("objfs: ready; Ctrl-C or SIGTERM stops and unmounts", flush=True)

    from objfs.store.config import load_config

    config = load_config(store_path)
    host = kwargs.get("host") or config.s3.host
    port = config.s3.port if kwargs.get("port") is None else kwargs["port"]
    dicom_port = config.dicom.port if kwargs.get("dicom_port") is None else kwargs["dicom_port"]
    try:
        check_port_free(host, port, "S3")
        if kwargs.get("dicom", True):
            check_port_free("", dicom_port, "DICOM")
        if config.dicomweb.port is not None:
            check_port_free(config.dicomweb.host, config.dicomweb.port, "DICOMweb")
        admin_port = config.admin.port if kwargs.get("admin_port") is None else kwargs["admin_port"]
        check_port_free(config.admin.host, admin_port, "admin")
        if mount is not None:
            from objfs.fuse.mount import MountError, check_mountpoint

            mount.mkdir(parents=True, exist_ok=True)
            try:
                check_mountpoint(mount)
            except MountError as exc:
                raise StartupError(str(exc)) from None
        trio.run(partial(serve, store_path, mount=mount, allow_other=allow_other, on_ready=announce, **kwargs))
    except StartupError as exc:
        print(f"objfs: {exc}", file=sys.stderr)
        return 2
    except FrontStopped as exc:
        print(f"objfs: {exc}", file=sys.stderr)
        return 1
    except BaseException as exc:
        taken = _address_in_use(exc)
        if taken is None:
            raise
        # Taken between the check and the bind: still one line.
        print(f"objfs: a port is in use ({taken.strerror}); S3 port {port}, DICOM port {dicom_port}", file=sys.stderr)
        return 2
    return 0
