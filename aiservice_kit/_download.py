"""Downloads files into the dataset cache, checked against pinned sha256s.

The fetchers in `aiservice_kit.datasets` describe each dataset as
`RemoteFile`s (an original public URL and the sha256 of its bytes) and call
`fetch_file`. A file only gets its final name in the cache once its sha256
matched, so a file found there is used as is, with no network access.
Only the standard library talks to the network (urllib).
"""

import hashlib
import http.client
import os
import re
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from aiservice_kit._version import __version__

#: Environment variable naming the cache folder.
DATA_ENV = "AISERVICE_KIT_DATA"
#: Environment variable naming a mirror laid out like the cache.
MIRROR_ENV = "AISERVICE_KIT_DATA_MIRROR"
#: The cache folder when neither `data_home=` nor $AISERVICE_KIT_DATA says.
DEFAULT_DATA_HOME = Path("~/.aiservice_kit/datasets")

_PART_SUFFIX = ".part"
_CHUNK = 1 << 16


class ChecksumMismatchError(ValueError):
    """Raised when downloaded bytes do not have the pinned sha256.

    The bad file is removed before this is raised, so the next call starts
    a fresh download.
    """


class DownloadError(ConnectionError):
    """Raised when a file cannot be downloaded (offline, refused, HTTP error).

    The message names the URL and the folder where the file can be put by
    hand instead.
    """


@dataclass(frozen=True)
class Member:
    """A file to extract from a downloaded zip archive.

    Args:
        path: str. The member's path inside the archive.
        filename: str. Its name in the dataset's cache folder.
        sha256: str or None. The sha256 of the extracted bytes, when known;
            checked after extraction.
    """

    path: str
    filename: str
    sha256: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: where it lives and what its bytes hash to.

    Args:
        url: str. The original public URL.
        sha256: str. The sha256 (hex) of the bytes the URL serves.
        filename: str or None. Its name in the cache folder; by default the
            last segment of `url`. A mirror serves it as
            `<mirror>/<folder>/<filename>`.
        size: int or None. Its size in bytes, when known (for messages).
        members: tuple of `Member`. For a zip archive, the files to extract
            next to it; the dataset is then cached once those exist.
    """

    url: str
    sha256: str
    filename: str | None = None
    size: int | None = None
    members: tuple[Member, ...] = ()

    @property
    def name(self) -> str:
        return self.filename or self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def targets(self) -> tuple[str, ...]:
        """The file names that must be in the cache folder for a cache hit."""
        if self.members:
            return tuple(member.filename for member in self.members)
        return (self.name,)


def get_data_home(data_home: str | os.PathLike | None = None) -> Path:
    """Returns the dataset cache folder.

    Args:
        data_home: str, PathLike or None. An explicit folder; when None,
            `$AISERVICE_KIT_DATA`, else `~/.aiservice_kit/datasets`.

    Returns:
        The folder as an absolute `Path` (not created here).

    Example:
    ```python
    from aiservice_kit.datasets import get_data_home
    print(get_data_home())  # ~/.aiservice_kit/datasets, expanded
    ```
    """
    if data_home is None:
        data_home = os.environ.get(DATA_ENV) or DEFAULT_DATA_HOME
    return Path(data_home).expanduser().resolve()


def _mirror_url(base_url: str | None, folder: str, remote: RemoteFile) -> str:
    if not base_url:
        base_url = os.environ.get(MIRROR_ENV)
    if not base_url:
        return remote.url
    return f"{base_url.rstrip('/')}/{folder}/{remote.name}"


def sha256_of(path: str | os.PathLike) -> str:
    """Returns the sha256 (hex) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Incomplete(OSError):
    """The connection ended before the promised number of bytes."""


def _download_once(url: str, part: Path, timeout: float, progress: bool):
    """Appends the rest of `url` to `part` (HTTP Range), or starts over."""
    from tqdm import tqdm

    start = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(
        url, headers={"User-Agent": f"aiservice_kit/{__version__}"}
    )
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:
            error.close()
            # The partial file is already as long as (or longer than) the
            # resource: drop it and start over on the next attempt.
            part.unlink()
            raise _Incomplete("the server refused the resume range") from error
        raise
    with response:
        resumed = start and response.status == 206
        expected = response.headers.get("Content-Length")
        total = (
            int(expected)
            if expected and re.fullmatch(r"[0-9]+", expected)
            else None
        )
        if resumed and not response.headers.get("Content-Range", "").startswith(
            f"bytes {start}-"
        ):
            part.unlink()
            raise _Incomplete("the server answered another range than asked")
        if not resumed:
            start = 0
        elif total is not None:
            total += start
        mode = "ab" if resumed else "wb"
        with (
            open(part, mode) as out,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name[: -len(_PART_SUFFIX)],
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    received = part.stat().st_size
    if total is not None and received < total:
        raise _Incomplete(
            f"the connection closed after {received} of {total} bytes"
        )


def _is_permanent(error: BaseException) -> bool:
    """HTTP 4xx (but 408/429) will not change on retry."""
    return (
        isinstance(error, urllib.error.HTTPError)
        and 400 <= error.code < 500
        and error.code not in (408, 429)
    )


def fetch_file(
    remote: RemoteFile,
    folder: str,
    *,
    data_home: str | os.PathLike | None = None,
    base_url: str | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Downloads one file into `<data_home>/<folder>/`, unless it is there.

    The bytes go to `<name>.part` first. An interrupted download resumes
    from where it stopped (HTTP Range) on the next attempt or call; the
    file gets its final name only once its sha256 matches `remote.sha256`.

    Args:
        remote: RemoteFile. What to download and its pinned sha256.
        folder: str. The dataset's folder inside the cache.
        data_home: str, PathLike or None. The cache (see `get_data_home`).
        base_url: str or None. A mirror laid out like the cache, tried
            instead of `remote.url` (default: `$AISERVICE_KIT_DATA_MIRROR`).
        retries: int. Further attempts after a failed one (>= 0).
        backoff: float. Seconds before the first retry, doubled after each.
        timeout: float. Seconds to wait for the server on each read.
        progress: bool. Show a tqdm progress bar.

    Returns:
        The path of the verified file.

    Raises:
        ValueError: if `retries` is negative or `backoff` is negative.
        DownloadError: if every attempt failed (offline, refused, HTTP
            error); the message names the URL and the folder to put the
            file in by hand.
        ChecksumMismatchError: if the downloaded bytes have another sha256
            (the file is removed).

    Example:
    ```python
    from aiservice_kit._download import RemoteFile, fetch_file
    path = fetch_file(
        RemoteFile("https://example.org/data.csv", sha256="ab12..."),
        folder="example",
    )
    ```
    """
    if not isinstance(retries, int) or retries < 0:
        raise ValueError(
            f"`retries` must be an int >= 0. Received: retries={retries!r}"
        )
    if backoff < 0:
        raise ValueError(
            f"`backoff` must be >= 0 seconds. Received: backoff={backoff!r}"
        )
    directory = get_data_home(data_home) / folder
    target = directory / remote.name
    if target.is_file():
        return target
    url = _mirror_url(base_url, folder, remote)
    directory.mkdir(parents=True, exist_ok=True)
    part = directory / (remote.name + _PART_SUFFIX)
    last_error: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            _download_once(url, part, timeout, progress)
        except ValueError as error:  # a malformed URL: retrying won't help
            last_error = error
            break
        except (OSError, http.client.HTTPException) as error:
            # URLError, timeouts, resets and refused connections are
            # OSErrors; IncompleteRead and BadStatusLine HTTPExceptions.
            last_error = error
            if isinstance(error, urllib.error.HTTPError):
                error.close()  # its body is not needed
            if _is_permanent(error):
                break
            continue
        last_error = None
        break
    if last_error is not None:
        size = f" ({remote.size:,} bytes)" if remote.size else ""
        raise DownloadError(
            f"Could not download {url}{size} after {attempt + 1} "
            f"attempt(s): {last_error}. If this machine is offline, download "
            f"that file elsewhere and put it in the folder {directory} as "
            f"{remote.name!r} (sha256 {remote.sha256}); it is then used "
            "without any network access."
        ) from last_error
    digest = sha256_of(part)
    if digest != remote.sha256:
        part.unlink()
        raise ChecksumMismatchError(
            f"The file downloaded from {url} is corrupted or has changed: "
            f"its sha256 is {digest}, expected {remote.sha256}. It was "
            "removed; call again to download it afresh, or put a good copy "
            f"in the folder {directory} as {remote.name!r}."
        )
    os.replace(part, target)
    return target


def _extract(archive: Path, members: tuple[Member, ...], directory: Path):
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in members:
                target = directory / member.filename
                if target.is_file():
                    continue
                temporary = directory / (member.filename + _PART_SUFFIX)
                with (
                    bundle.open(member.path) as source,
                    open(temporary, "wb") as out,
                ):
                    shutil.copyfileobj(source, out, _CHUNK)
                if member.sha256 is not None:
                    digest = sha256_of(temporary)
                    if digest != member.sha256:
                        temporary.unlink()
                        raise ChecksumMismatchError(
                            f"{member.path!r} extracted from {archive} has "
                            f"sha256 {digest}, expected {member.sha256}. "
                            "Remove the archive and fetch again."
                        )
                os.replace(temporary, target)
    except (zipfile.BadZipFile, KeyError) as error:
        raise ChecksumMismatchError(
            f"Could not extract {[m.path for m in members]} from {archive}: "
            f"{error}. Remove the archive and fetch again."
        ) from error


def fetch_dataset(
    remotes: tuple[RemoteFile, ...],
    folder: str,
    *,
    data_home: str | os.PathLike | None = None,
    base_url: str | None = None,
    progress: bool = True,
    **options,
) -> Path:
    """Makes sure every file of a dataset is in its cache folder.

    Files already there are used without network access; archives are
    downloaded (see `fetch_file`) and their members extracted beside them.

    Args:
        remotes: tuple of RemoteFile. The dataset's files.
        folder: str. The dataset's folder inside the cache.
        data_home: str, PathLike or None. The cache (see `get_data_home`).
        base_url: str or None. A mirror laid out like the cache.
        progress: bool. Show progress bars.
        **options: passed on to `fetch_file` (retries, backoff, timeout).

    Returns:
        The dataset's folder.
    """
    directory = get_data_home(data_home) / folder
    for remote in remotes:
        if all((directory / name).is_file() for name in remote.targets):
            continue
        path = fetch_file(
            remote,
            folder,
            data_home=data_home,
            base_url=base_url,
            progress=progress,
            **options,
        )
        if remote.members:
            _extract(path, remote.members, directory)
    return directory
