"""Fetching a dataset's official release archive, checked against its published MD5."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["download_release"]


def download_release(url: str, md5: str, data_dir: Path) -> None:
    """Fetches an official archive with torchvision's utilities, checks its MD5, then extracts it.

    An archive already in ``data_dir`` with the right checksum is used as is (so a copy fetched by
    hand on another machine works offline); one with the wrong checksum is never extracted.
    """
    from torchvision.datasets import utils

    archive = Path(data_dir) / os.path.basename(url)
    try:
        utils.download_url(url, str(data_dir), md5=md5)
    except RuntimeError:
        pass  # torchvision's own refusal of a bad checksum; the check below says what to do about it
    except OSError as error:  # no network, DNS, HTTP errors, a read-only data_dir
        raise FileNotFoundError(
            f"Could not download {url}: {error}. Fetch {archive.name} on a machine with network access and put it "
            f"at {archive}: it is checked and extracted on the next run."
        ) from None
    if not archive.is_file():
        raise FileNotFoundError(f"Downloading {url} left no {archive}. Put the archive there by hand and run again.")
    if not utils.check_integrity(str(archive), md5):
        raise ValueError(
            f"{archive} does not have the official MD5 {md5} (an interrupted or altered download), so it was not "
            f"extracted. Delete it and run again, or fetch it from {url} by hand and compare `md5sum`."
        )
    utils.extract_archive(str(archive), str(data_dir))
