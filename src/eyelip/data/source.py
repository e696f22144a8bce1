"""Read a CelebAMask-HQ copy in place: a folder in the dataset's layout or the official zip.

A zip is read without unpacking, so DVC hashes one file instead of ~400k. Sources are picklable
(joblib workers re-open the zip lazily) and return raw bytes; decoding lives in ``preprocess``.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from eyelip.data.layout import IMAGE_DIR, MASK_DIR, MASKS_PER_FOLDER, image_relpath
from eyelip.errors import DataError

_IMAGE_NAME = re.compile(rf"(?:^|/){IMAGE_DIR}/(\d+)\.jpg$")
# What to do about a wrong root, for the pipeline's reader; `eyelip evaluate --data` passes its own.
_PARAMS_HINT = (
    "set data.root in params.yaml to a CelebAMask-HQ folder or CelebAMask-HQ.zip "
    "(or data/sample.zip, the built-in sample)"
)


class Source:
    """Files of one dataset copy, addressed by their path relative to the dataset root. Errors about the
    root start with ``name``, what the reader called it (a params key or a command-line flag), and end
    with ``hint``, what they can do."""

    def __init__(self, root: str | os.PathLike[str], name: str = "data.root", hint: str = _PARAMS_HINT) -> None:
        self.root = Path(root)
        self.name, self.hint = name, hint
        if not self.root.exists():
            raise DataError(f"{name}: {self.root} does not exist; {hint}")
        self._zip: zipfile.ZipFile | None = None
        self._names: set[str] = set()
        self._dirs: set[str] = set()  # every folder of the zip, for O(1) has_dir
        self.prefix = ""  # folder inside the zip that holds the layout, e.g. "CelebAMask-HQ/"
        if self.root.is_file():
            if not zipfile.is_zipfile(self.root):
                raise DataError(f"{name}: {self.root} is neither a folder nor a zip file; {hint}")
            self.prefix = self._find_prefix()
        elif not (self.root / IMAGE_DIR).is_dir():
            raise DataError(f"{name}: {self.root} is not CelebAMask-HQ-shaped: {IMAGE_DIR}/ not found in it; {hint}")
        if not self.has_dir(MASK_DIR):
            raise DataError(
                f"{name}: {self.root} has no {MASK_DIR}/ folder next to {IMAGE_DIR}/; "
                f"the part masks are needed to build targets"
            )

    # Pickling drops the open zip handle; each worker process re-opens it on first use.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_names": set(), "_dirs": set()}

    @property
    def is_zip(self) -> bool:
        return self.root.is_file()

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None:
            self._zip = zipfile.ZipFile(self.root)
            self._names = set(self._zip.namelist())
            for name in self._names:
                parts = name.split("/")[:-1]
                self._dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        return self._zip

    def _find_prefix(self) -> str:
        for name in self._archive().namelist():
            head, sep, _ = name.partition(f"{IMAGE_DIR}/")
            if sep and (head == "" or head.endswith("/")):
                return head
        raise DataError(
            f"{self.name}: {self.root} is not CelebAMask-HQ-shaped: no {IMAGE_DIR}/ folder inside the zip; {self.hint}"
        )

    def describe(self, relpath: str) -> str:
        """Where a file lives, for messages: a path, or ``archive.zip:member``."""
        return f"{self.root}:{self.prefix}{relpath}" if self.is_zip else str(self.root / relpath)

    def has_dir(self, relpath: str) -> bool:
        if self.is_zip:
            self._archive()
            return f"{self.prefix}{relpath}".rstrip("/") in self._dirs
        return (self.root / relpath).is_dir()

    def exists(self, relpath: str) -> bool:
        if self.is_zip:
            self._archive()
            return f"{self.prefix}{relpath}" in self._names
        return (self.root / relpath).is_file()

    def read(self, relpath: str) -> bytes:
        try:
            if self.is_zip:
                return self._archive().read(f"{self.prefix}{relpath}")
            return (self.root / relpath).read_bytes()
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"{self.describe(relpath)}: cannot read ({exc})") from exc

    def ids(self) -> list[int]:
        """Sample ids with an image, in numeric order."""
        if self.is_zip:
            names = (n[len(self.prefix) :] for n in self._archive().namelist() if n.startswith(self.prefix))
            found = (_IMAGE_NAME.search(n) for n in names)
            ids = sorted(int(m.group(1)) for m in found if m)
        else:
            ids = sorted(int(p.stem) for p in (self.root / IMAGE_DIR).glob("*.jpg") if p.stem.isdigit())
        if not ids:
            raise DataError(f"{self.name}: {self.describe(IMAGE_DIR)} holds no {{id}}.jpg images; {self.hint}")
        return ids

    def mask_folder(self, sample_id: int) -> str:
        return f"{MASK_DIR}/{sample_id // MASKS_PER_FOLDER}"

    def check_sample(self, sample_id: int) -> None:
        """Fail early, naming the file, when an image has no mask folder at all."""
        folder = self.mask_folder(sample_id)
        if not self.has_dir(folder):
            raise DataError(
                f"{self.describe(image_relpath(sample_id))}: its mask folder {self.describe(folder)}/ is missing"
            )
