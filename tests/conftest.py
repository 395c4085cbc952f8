"""Shared test fixtures. Imports nothing heavy (no tfds) at module level; applies cac-jax's CPU settings.

* Every test runs with the network closed: any connection to a non-local address, and any TFDS
  download, raises ``NetworkBlocked``, so a test that tries to download fails.
* Prepared TFDS data goes to a per-session temporary directory (``$CAC_JAX_DATA_DIR``), and so do
  the compiled programs of the ``cac-jax`` commands the tests start (``$CAC_JAX_COMPILATION_CACHE``),
  never to the user's cache.
"""

import socket
import sys

import pytest

import cac_jax.runtime

# As the cac-jax command does, before any JAX computation: the measured CPU settings (the compilation cache only
# for the commands the tests start, below).
cac_jax.runtime.configure(compilation_cache=False)


class NetworkBlocked(RuntimeError):
    """Raised when a test tries to reach the network."""


_LOCAL = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX socket path
        return True
    host = address[0] if isinstance(address, tuple) and address else address
    return host is None or (isinstance(host, str) and (host in _LOCAL or host.startswith("127.")))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, address):
        if not _is_local(address):
            raise NetworkBlocked(f"test tried to connect to {address!r}")
        return real_connect(self, address)

    def refuse(*args, **kwargs):
        raise NetworkBlocked(f"test tried to download: {args!r:.200}")

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local((host,)):
            refuse(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    if "tensorflow_datasets" in sys.modules:
        from tensorflow_datasets.core.download import download_manager

        for name in ("download", "download_and_extract", "download_kaggle_data"):
            if hasattr(download_manager.DownloadManager, name):
                monkeypatch.setattr(download_manager.DownloadManager, name, refuse)
    yield



@pytest.fixture(autouse=True, scope="session")
def _data_dir_env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAC_JAX_DATA_DIR", str(tmp_path_factory.mktemp("cac_jax_data")))
        # The commands the tests start share one compilation cache, never the user's.
        mp.setenv("CAC_JAX_COMPILATION_CACHE", str(tmp_path_factory.mktemp("jax_compilation_cache")))
        yield
