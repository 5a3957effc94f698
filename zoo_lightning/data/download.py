"""Fetching a dataset's official release archive, checked against its published MD5."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["download_release"]


def download_release(url: str, md5: str, data_dir: Path) -> None:
    """Fetches an official archive with torchvision's utilities, checks its MD5, then extracts it.

    An archive already in ``data_dir`` is used as is (so a copy fetched by hand on another machine
    works offline), and one with the wrong checksum is never extracted. The download goes to a
    hidden ``.part`` file renamed into place once complete and checked, so a failed or interrupted
    one leaves nothing behind that a later run would mistake for the archive.
    """
    from torchvision.datasets import utils

    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise NotADirectoryError(
            f"--data.data_dir {data_dir} is a file; give the folder that holds (or is to hold) the dataset."
        )
    archive = data_dir / os.path.basename(url)
    if not archive.is_file():
        created = not data_dir.exists()
        partial = data_dir / f".{archive.name}.part"
        try:
            utils.download_url(url, str(data_dir), filename=partial.name)
            if not utils.check_integrity(str(partial), md5):
                raise ValueError(
                    f"The download of {url} does not have the official MD5 {md5} (an interrupted or "
                    f"altered transfer); nothing was kept. Run again, or fetch {archive.name} by hand."
                )
            os.replace(partial, archive)
        except OSError as error:  # no network, DNS, HTTP errors, a read-only data_dir
            where = "did not exist" if created else "holds no dataset"
            raise FileNotFoundError(
                f"The data folder {data_dir} {where}, so its download was tried: could not download {url}: {error}. "
                f"Offline, fetch {archive.name} on a machine with network access and put it at {archive} (it is "
                "checked and extracted on the next run), or give --data.data_dir where the dataset is."
            ) from None
        finally:
            partial.unlink(missing_ok=True)
            if created and data_dir.is_dir() and not any(data_dir.iterdir()):
                data_dir.rmdir()
    if not utils.check_integrity(str(archive), md5):
        raise ValueError(
            f"{archive} does not have the official MD5 {md5} (an interrupted or altered download), so it was not "
            f"extracted. Delete it and run again, or fetch it from {url} by hand and compare `md5sum`."
        )
    utils.extract_archive(str(archive), str(data_dir))
