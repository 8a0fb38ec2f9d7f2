"""Dataset fetchers against a real HTTP server on 127.0.0.1, never the web.

The server serves the real files of shared/data (and zip archives built
from them) laid out as a mirror of the cache. Handlers honour HTTP Range,
can corrupt the bytes, or cut the connection half-way through a file.
"""

import hashlib
import http.server
import io
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from aiservice_kit import datasets
from aiservice_kit._download import RemoteFile
from aiservice_kit._download import fetch_file
from aiservice_kit.datasets import ChecksumMismatchError
from aiservice_kit.datasets import DownloadError
from aiservice_kit.datasets import fetch_mnist
from aiservice_kit.datasets import fetch_movielens
from aiservice_kit.datasets import fetch_sms_spam
from aiservice_kit.datasets import fetch_ucr_uea
from aiservice_kit.datasets import get_data_home


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        mode = server.modes.get(self.path, "ok")
        if mode == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        wanted = self.headers.get("Range")
        if mode == "norange":
            wanted = None
        if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes=") : -1])
        body = data[start:]
        if start:
            self.send_response(206)
            self.send_header(
                "Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"
            )
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate" and server.cuts > 0:
            server.cuts -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        # Counted before the write: the client may finish reading (and the
        # test assert) before this thread runs again.
        server.sent += len(body)
        self.wfile.write(body)


class _Mirror:
    """A threaded HTTP server on 127.0.0.1 serving an in-memory mirror."""

    def __init__(self):
        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), _Handler
        )
        self.server.files = {}
        self.server.modes = {}
        self.server.requests = []
        self.server.cuts = 0
        self.server.sent = 0
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.stopped = False
        self.thread = threading.Thread(
            target=self.server.serve_forever, daemon=True
        )
        self.thread.start()

    def add(self, path: str, data: bytes, mode: str = "ok"):
        self.server.files[path] = data
        self.server.modes[path] = mode

    def stop(self):
        if self.stopped:
            return
        self.stopped = True
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def mirror():
    server = _Mirror()
    yield server
    server.stop()


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _serve_ucr(mirror, data_dir, name: str):
    for split in ("TRAIN", "TEST"):
        path = data_dir / name.lower() / f"{name}_{split}.ts"
        mirror.add(f"/{name.lower()}/{path.name}", path.read_bytes())


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def test_real_pins_match_the_shared_bytes(data_dir):
    """The registry's pins of files that shared/data holds byte for byte."""
    for name, pins in datasets._UCR_UEA.items():
        for split, (sha256, size) in zip(("TRAIN", "TEST"), pins, strict=True):
            data = (data_dir / name.lower() / f"{name}_{split}.ts").read_bytes()
            assert (_sha256(data), len(data)) == (sha256, size)
    for member in datasets._MOVIELENS["latest-small"].members:
        data = (
            data_dir / "movielens-latest-small" / member.filename
        ).read_bytes()
        assert _sha256(data) == member.sha256
    sms = datasets._SMS_SPAM.members[0]
    data = (data_dir / "sms-spam-collection" / sms.filename).read_bytes()
    assert _sha256(data) == sms.sha256
    labels = datasets._MNIST["t10k"][1]
    data = (data_dir / "mnist" / labels.name).read_bytes()
    assert (_sha256(data), len(data)) == (labels.sha256, labels.size)


def test_download_with_the_real_pins(mirror, data_dir, tmp_path):
    _serve_ucr(mirror, data_dir, "GunPoint")

    (x_train, y_train), (x_test, y_test) = fetch_ucr_uea(
        "gunpoint", data_home=tmp_path, base_url=mirror.url, progress=False
    )

    assert x_train.shape == (50, 150, 1) and x_test.shape == (150, 150, 1)
    assert sorted(set(y_train)) == ["1", "2"]
    folder = tmp_path / "gunpoint"
    assert sorted(p.name for p in folder.iterdir()) == [
        "GunPoint_TEST.ts",
        "GunPoint_TRAIN.ts",
    ]


def test_cache_hit_needs_no_network(mirror, data_dir, tmp_path):
    _serve_ucr(mirror, data_dir, "ItalyPowerDemand")
    first = fetch_ucr_uea(
        "ItalyPowerDemand",
        data_home=tmp_path,
        base_url=mirror.url,
        progress=False,
    )
    requests = len(mirror.server.requests)
    mirror.stop()

    again = fetch_ucr_uea(
        "ItalyPowerDemand",
        data_home=tmp_path,
        base_url=mirror.url,
        progress=False,
    )

    np.testing.assert_array_equal(again[0][0], first[0][0])
    assert requests == 2


def test_resumes_a_partial_download(mirror, data_dir, tmp_path):
    data = (data_dir / "basicmotions" / "BasicMotions_TRAIN.ts").read_bytes()
    _serve_ucr(mirror, data_dir, "BasicMotions")
    folder = tmp_path / "basicmotions"
    folder.mkdir()
    half = len(data) // 2
    (folder / "BasicMotions_TRAIN.ts.part").write_bytes(data[:half])

    (x_train, _), _ = fetch_ucr_uea(
        "BasicMotions", data_home=tmp_path, base_url=mirror.url, progress=False
    )

    assert x_train.shape == (40, 100, 6)
    assert ("/basicmotions/BasicMotions_TRAIN.ts", f"bytes={half}-") in (
        mirror.server.requests
    )
    test_size = (folder / "BasicMotions_TEST.ts").stat().st_size
    assert mirror.server.sent == len(data) - half + test_size
    assert not list(folder.glob("*.part"))


def test_a_server_without_range_support_restarts_from_zero(mirror, tmp_path):
    data = b"0123456789" * 5000
    mirror.add("/toy/whole.bin", data, mode="norange")
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "whole.bin.part").write_bytes(data[:777])
    remote = RemoteFile("https://example.invalid/whole.bin", _sha256(data))

    path = fetch_file(
        remote, "toy", data_home=tmp_path, base_url=mirror.url, progress=0
    )

    assert path.read_bytes() == data
    assert mirror.server.sent == len(data)


def test_corrupted_download_raises_and_is_removed(mirror, tmp_path):
    data = b"good bytes " * 1000
    mirror.add("/toy/file.bin", data, mode="corrupt")
    remote = RemoteFile("https://example.invalid/file.bin", _sha256(data))

    with pytest.raises(ChecksumMismatchError, match="sha256") as caught:
        fetch_file(
            remote, "toy", data_home=tmp_path, base_url=mirror.url, progress=0
        )

    assert f"{mirror.url}/toy/file.bin" in str(caught.value)
    assert list((tmp_path / "toy").iterdir()) == []
    # Fixed upstream: the next call downloads afresh and succeeds.
    mirror.add("/toy/file.bin", data)
    path = fetch_file(
        remote, "toy", data_home=tmp_path, base_url=mirror.url, progress=0
    )
    assert path.read_bytes() == data


def test_truncated_download_is_retried_and_resumed(mirror, tmp_path):
    data = bytes(range(256)) * 2000
    mirror.add("/toy/cut.bin", data, mode="truncate")
    mirror.server.cuts = 2
    remote = RemoteFile("https://example.invalid/cut.bin", _sha256(data))

    path = fetch_file(
        remote,
        "toy",
        data_home=tmp_path,
        base_url=mirror.url,
        retries=3,
        backoff=0.0,
        progress=False,
    )

    assert path.read_bytes() == data
    ranges = [wanted for _, wanted in mirror.server.requests]
    assert ranges[0] is None and len(ranges) == 3
    assert ranges[1] == f"bytes={len(data) // 2}-"


def test_truncated_beyond_the_retries_fails_but_keeps_the_part(
    mirror, tmp_path
):
    data = b"x" * 10_000
    mirror.add("/toy/cut.bin", data, mode="truncate")
    mirror.server.cuts = 5
    remote = RemoteFile("https://example.invalid/cut.bin", _sha256(data))

    with pytest.raises(DownloadError, match="2 attempt"):
        fetch_file(
            remote,
            "toy",
            data_home=tmp_path,
            base_url=mirror.url,
            retries=1,
            backoff=0.0,
            progress=False,
        )
    assert (tmp_path / "toy" / "cut.bin.part").is_file()


def test_offline_names_the_url_and_the_folder(closed_port_url, tmp_path):
    with pytest.raises(DownloadError) as caught:
        fetch_ucr_uea(
            "ArrowHead",
            data_home=tmp_path,
            base_url=closed_port_url,
            progress=False,
        )
    message = str(caught.value)
    assert f"{closed_port_url}/arrowhead/ArrowHead_TRAIN.ts" in message
    assert str(tmp_path / "arrowhead") in message
    assert "'ArrowHead_TRAIN.ts'" in message


def test_a_missing_file_is_not_retried(mirror, tmp_path):
    remote = RemoteFile("https://example.invalid/absent.bin", "0" * 64)
    with pytest.raises(DownloadError, match="404"):
        fetch_file(
            remote, "toy", data_home=tmp_path, base_url=mirror.url, progress=0
        )
    assert len(mirror.server.requests) == 1


def test_files_put_in_the_cache_by_hand_are_used(data_dir, closed_port_url):
    # shared/data is laid out as the cache: nothing is downloaded.
    images, labels = fetch_mnist(
        "t10k", data_home=data_dir, base_url=closed_port_url
    )
    assert images.shape == (10000, 28, 28) and labels[0] == 7
    texts, labels = fetch_sms_spam(data_home=data_dir, base_url=closed_port_url)
    assert len(texts) == 5574
    folder = fetch_movielens(data_home=data_dir, base_url=closed_port_url)
    assert folder.resolve() == (data_dir / "movielens-latest-small").resolve()


def test_archives_are_extracted_and_members_checked(
    mirror, data_dir, tmp_path, monkeypatch
):
    source = data_dir / "movielens-latest-small"
    real = datasets._MOVIELENS["latest-small"]
    archive = _zip(
        {m.path: (source / m.filename).read_bytes() for m in real.members}
    )
    mirror.add("/movielens-latest-small/ml-latest-small.zip", archive)
    # A registry entry for the served bytes; the members keep the real pins.
    monkeypatch.setitem(
        datasets._MOVIELENS,
        "latest-small",
        RemoteFile(real.url, _sha256(archive), members=real.members),
    )

    folder = fetch_movielens(
        data_home=tmp_path, base_url=mirror.url, progress=False
    )

    from aiservice_kit.recommenders.interactions import load_movielens_ratings

    assert len(load_movielens_ratings(folder).user_ids) == 100_836
    assert (folder / "ml-latest-small.zip").is_file()
    # Extracted files are enough: the archive may go.
    (folder / "ml-latest-small.zip").unlink()
    mirror.stop()
    assert fetch_movielens(data_home=tmp_path, base_url=mirror.url) == folder


def test_a_member_with_the_wrong_bytes_is_refused(
    mirror, tmp_path, monkeypatch
):
    real = datasets._SMS_SPAM
    archive = _zip({"SMSSpamCollection": b"ham\tnot the real file\n"})
    mirror.add("/sms-spam-collection/smsspamcollection.zip", archive)
    monkeypatch.setattr(
        datasets,
        "_SMS_SPAM",
        RemoteFile(real.url, _sha256(archive), members=real.members[:1]),
    )

    with pytest.raises(ChecksumMismatchError, match="SMSSpamCollection"):
        fetch_sms_spam(data_home=tmp_path, base_url=mirror.url, progress=False)
    assert not (tmp_path / "sms-spam-collection" / "SMSSpamCollection").exists()


def test_environment_variables_choose_cache_and_mirror(
    mirror, data_dir, tmp_path, monkeypatch
):
    _serve_ucr(mirror, data_dir, "GunPoint")
    monkeypatch.setenv("AISERVICE_KIT_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("AISERVICE_KIT_DATA_MIRROR", mirror.url + "/")

    assert get_data_home() == tmp_path / "cache"
    fetch_ucr_uea("GunPoint", progress=False)
    assert (tmp_path / "cache" / "gunpoint" / "GunPoint_TEST.ts").is_file()
    monkeypatch.delenv("AISERVICE_KIT_DATA")
    assert get_data_home() == Path("~/.aiservice_kit/datasets").expanduser()
    assert get_data_home(tmp_path) == tmp_path


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="name='Coffee'"):
        fetch_ucr_uea("Coffee", data_home=tmp_path)
    with pytest.raises(ValueError, match="kind='test'"):
        fetch_mnist("test", data_home=tmp_path)
    with pytest.raises(ValueError, match="variant='10m'"):
        fetch_movielens("10m", data_home=tmp_path)
    with pytest.raises(ValueError, match="retries=-1"):
        fetch_file(RemoteFile("http://x/y", "0"), "toy", retries=-1)


def test_a_copied_cache_is_used_offline(mirror, data_dir, tmp_path):
    """A cache copied elsewhere (shutil.copytree) is a valid cache."""
    _serve_ucr(mirror, data_dir, "GunPoint")
    fetch_ucr_uea(
        "GunPoint", data_home=tmp_path / "a", base_url=mirror.url, progress=0
    )
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    mirror.stop()
    (x_train, _), _ = fetch_ucr_uea(
        "GunPoint", data_home=tmp_path / "b", base_url=mirror.url
    )
    assert x_train.shape == (50, 150, 1)
