"""Bad-input suite, local datasets: malformed CIFAR-10 / STL-10 files give one clear error, and no code runs.

One table drives every case (issue 16, items 3 and 7). Each case writes a complete dataset folder in the exact
on-disk format of the official release into ``tmp_path`` (CIFAR-10's "python version" pickle batches, STL-10's
binary files), spoils one file, then

- calls the public loader and expects :class:`DataFormatError` (a ``ValueError``) whose message names the spoilt
  file, what was found in it and what was expected;
- runs the command line that reads the folder (``stepwise run linear_bt --smoke --dataset ... --data-dir ...``,
  in-process) and expects exit status 2, the same message on stderr, no traceback and no output folder left;
- for the crafted pickles, checks that the code the pickle carries did not run (its marker file is absent).

25 cases; 19 of them were defects before issue 16 (``Case.old_defect`` says how; measured by running this table
against the loader of commit cbe521f: raw UnpicklingError / EOFError / TypeError tracebacks, silent acceptance, or
code run at load time). ``stepwise.cli.main`` is called in-process: ``python -m stepwise.cli`` behaves the same but
pays ~3 s of imports per case.
"""

from __future__ import annotations

import builtins
import codecs
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from stepwise import cli
from stepwise.data import load_cifar10, load_stl10
from stepwise.data.datasets import DataFormatError

CIFAR_SIZES = (2, 3, 2, 1, 2)  # images per training batch; tiny, the format does not care
STL_TRAIN = 3
STL_PER_IMAGE = 3 * 96 * 96
CIFAR_EXPECTED = r"expected a CIFAR-10 python batch"


# ------------------------------------------------------------------------------------------------------------
# Valid folders in the official formats.


def _cifar_batch(n: int, rng) -> dict:
    return {
        b"batch_label": b"training batch",
        b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def _write_cifar(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, n in enumerate(CIFAR_SIZES, start=1):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(_cifar_batch(n, rng), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(_cifar_batch(2, rng), protocol=2))
    return folder


def _write_stl(root: Path) -> Path:
    folder = root / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", STL_TRAIN), ("test", 2)):
        (folder / f"{split}_X.bin").write_bytes(rng.integers(0, 256, size=n * STL_PER_IMAGE, dtype=np.uint8).tobytes())
        (folder / f"{split}_y.bin").write_bytes(rng.integers(1, 11, size=n, dtype=np.uint8).tobytes())
    (folder / "unlabeled_X.bin").write_bytes(bytes(STL_PER_IMAGE))
    return folder


# ------------------------------------------------------------------------------------------------------------
# Crafted pickles: unpickling them would run code that creates ``marker``.


class _Payload:
    """Pickles as ``callable(*args)``: what a malicious pickle's REDUCE opcode does at load time."""

    def __init__(self, fn: Callable, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _os_system(marker: Path):
    return _Payload(os.system, f"touch {marker}")  # pickles as the global posix.system (nt.system on Windows)


def _exec(marker: Path):  # protocol 2 writes Python 2's name for the module, __builtin__
    return _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()")


def _eval(marker: Path):
    return _Payload(builtins.eval, f"open({str(marker)!r}, 'w').close()")


# ------------------------------------------------------------------------------------------------------------
# The cases.


class Case(NamedTuple):
    dataset: str  # "cifar10" or "stl10"
    file: str  # the spoilt file, relative to the dataset folder
    spoil: Callable[[Path, Path], None]  # (file path, marker path) -> None: overwrite the file
    found: str  # regex: what the message says was found
    expected: str  # regex: what the message says was expected
    split: str = "train"
    old_defect: str = ""  # how the loader before issue 16 failed here ("" = already a clear ValueError)


def _pickle_to(obj) -> Callable[[Path, Path], None]:
    return lambda path, marker: path.write_bytes(pickle.dumps(obj, protocol=2))


def _batch_with(**changes) -> Callable[[Path, Path], None]:
    def spoil(path: Path, marker: Path) -> None:
        batch = _cifar_batch(2, np.random.default_rng(1))
        batch.update({k.encode(): v for k, v in changes.items()})
        path.write_bytes(pickle.dumps(batch, protocol=2))

    return spoil


def _crafted(make: Callable[[Path], _Payload], *, nested: bool = False) -> Callable[[Path, Path], None]:
    def spoil(path: Path, marker: Path) -> None:
        payload = make(marker)
        obj = {b"data": np.zeros((2, 3072), np.uint8), b"labels": payload} if nested else payload
        path.write_bytes(pickle.dumps(obj, protocol=2))

    return spoil


def _truncate(path: Path, marker: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _garbage(path: Path, marker: Path) -> None:
    path.write_bytes(np.random.default_rng(2).integers(0, 256, size=4096, dtype=np.uint8).tobytes())


def _bytes(data: bytes) -> Callable[[Path, Path], None]:
    return lambda path, marker: path.write_bytes(data)


def _append(data: bytes) -> Callable[[Path, Path], None]:
    return lambda path, marker: path.write_bytes(path.read_bytes() + data)


def _chop(n: int) -> Callable[[Path, Path], None]:
    return lambda path, marker: path.write_bytes(path.read_bytes()[:-n])


NOT_A_PICKLE = r"not a readable pickle"
REFUSED = r"refused to unpickle it: it asks for the global {}"
UINT8 = r"expected uint8 pixels 0\.\.255"
LABELS_0_9 = r"expected (2 integers in 0\.\.9|labels 0\.\.9)"
STL_X = rf"expected a positive multiple of one 3x96x96 uint8 image \({STL_PER_IMAGE} bytes\)"
STL_Y = rf"expected {STL_TRAIN}, one uint8 label per image of train_X.bin"

CASES: dict[str, Case] = {
    # -- CIFAR-10: files that are not batches.
    "cifar-garbage": Case("cifar10", "data_batch_3", _garbage, NOT_A_PICKLE, CIFAR_EXPECTED,
                          old_defect="raw UnpicklingError"),
    "cifar-truncated": Case("cifar10", "data_batch_2", _truncate, rf"{NOT_A_PICKLE} \((UnpicklingError|EOFError)",
                            CIFAR_EXPECTED, old_defect="raw UnpicklingError / EOFError"),
    "cifar-empty": Case("cifar10", "data_batch_5", _bytes(b""), r"found an empty file \(0 bytes\)", CIFAR_EXPECTED,
                        old_defect="raw EOFError"),
    "cifar-list": Case("cifar10", "data_batch_1", _pickle_to([np.zeros((2, 3072), np.uint8), [0, 1]]),
                       r"found a pickled list", CIFAR_EXPECTED, old_defect="raw TypeError"),
    "cifar-no-data-key": Case("cifar10", "data_batch_4", _pickle_to({b"images": np.zeros((2, 3072), np.uint8),
                                                                     b"labels": [0, 1]}),
                              r"found a dict without b'data' \(its keys: b'images', b'labels'\)", CIFAR_EXPECTED),
    "cifar-test-garbage": Case("cifar10", "test_batch", _bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), NOT_A_PICKLE,
                               CIFAR_EXPECTED, split="test", old_defect="raw UnpicklingError"),
    # -- CIFAR-10: batches with wrong contents.
    "cifar-shape-3000": Case("cifar10", "data_batch_2", _batch_with(data=np.zeros((2, 3000), np.uint8)),
                             r"found b'data' of shape \(2, 3000\)", r"expected \(N, 3072\)"),
    "cifar-shape-hwc": Case("cifar10", "data_batch_2", _batch_with(data=np.zeros((2, 32, 32, 3), np.uint8)),
                            r"found b'data' of shape \(2, 32, 32, 3\)", r"expected \(N, 3072\)"),
    "cifar-label-count": Case("cifar10", "data_batch_1", _batch_with(labels=[1, 2, 3]),
                              r"found int\d+ labels of shape \(3,\) for 2 images", r"expected 2 integers in 0\.\.9"),
    "cifar-label-99": Case("cifar10", "data_batch_3", _batch_with(labels=[99, 1]),
                           r"found 1 label\(s\) outside 0\.\.9 \(values 99; first at index 0\)", LABELS_0_9,
                           old_defect="accepted silently; failed after training, in scikit-learn"),
    "cifar-label-minus-5": Case("cifar10", "data_batch_3", _batch_with(labels=[3, -5]),
                                r"found 1 label\(s\) outside 0\.\.9 \(values -5; first at index 1\)", LABELS_0_9,
                                old_defect="accepted silently"),
    "cifar-float-labels": Case("cifar10", "data_batch_3", _batch_with(labels=[1.0, 2.5]),
                               r"found float64 labels of shape \(2,\) for 2 images", r"expected 2 integers in 0\.\.9",
                               old_defect="accepted silently (2.5 truncated to 2)"),
    "cifar-float-pixels": Case("cifar10", "data_batch_4", _batch_with(data=np.full((2, 3072), 0.5)),
                               r"found float64 pixel data in b'data'", UINT8,
                               old_defect="accepted silently (0.5 cast to pixel 0)"),
    "cifar-data-bytes": Case("cifar10", "data_batch_4", _batch_with(data=bytes(2 * 3072)),
                             r"found b'data' of type bytes", CIFAR_EXPECTED,
                             old_defect="raw ValueError without the file (np.asarray of bytes)"),
    # -- CIFAR-10: crafted pickles that would run code at load time.
    "cifar-crafted-os-system": Case("cifar10", "data_batch_1", _crafted(_os_system),
                                    REFUSED.format(r"(posix|nt)\.system"), CIFAR_EXPECTED,
                                    old_defect="ran the code (created the marker file)"),
    "cifar-crafted-exec": Case("cifar10", "data_batch_1", _crafted(_exec),
                               REFUSED.format(r"(__builtin__|builtins)\.exec"), CIFAR_EXPECTED,
                               old_defect="ran the code (created the marker file)"),
    "cifar-crafted-nested-eval": Case("cifar10", "data_batch_2", _crafted(_eval, nested=True),
                                      REFUSED.format(r"(__builtin__|builtins)\.eval"), CIFAR_EXPECTED,
                                      old_defect="ran the code (created the marker file)"),
    "cifar-crafted-numpy-load": Case("cifar10", "data_batch_2", _crafted(lambda m: _Payload(np.load, str(m))),
                                     REFUSED.format(r"numpy\.load"), CIFAR_EXPECTED,
                                     old_defect="called numpy.load at unpickling time"),
    # _codecs.encode is admitted only as protocol 2 uses it (str -> latin-1 bytes).
    "cifar-crafted-codec": Case("cifar10", "data_batch_1", _crafted(lambda m: _Payload(codecs.encode, "x", "rot13")),
                                REFUSED.format(r"_codecs\.encode\(str, 'rot13'\)"), CIFAR_EXPECTED,
                                old_defect="raw TypeError (the pickle decoded to a str)"),
    # -- STL-10.
    "stl-x-truncated": Case("stl10", "train_X.bin", _chop(1), rf"found {STL_TRAIN * STL_PER_IMAGE - 1} bytes", STL_X),
    "stl-x-empty": Case("stl10", "train_X.bin", _bytes(b""), r"found 0 bytes", STL_X,
                        old_defect="accepted silently: a data set of 0 images"),
    "stl-y-short": Case("stl10", "train_y.bin", _chop(1), rf"found {STL_TRAIN - 1} labels", STL_Y),
    "stl-y-long": Case("stl10", "train_y.bin", _append(b"\x01"), rf"found {STL_TRAIN + 1} labels", STL_Y,
                       old_defect="accepted silently"),
    "stl-label-0": Case("stl10", "train_y.bin", _bytes(bytes([1, 0, 10])),
                        r"found 1 label\(s\) outside 1\.\.10 \(values 0; first at index 1\)",
                        r"expected labels 1\.\.10",
                        old_defect="accepted silently as label -1 (unlabeled)"),
    "stl-label-11": Case("stl10", "train_y.bin", _bytes(bytes([11, 2, 255])),
                         r"found 2 label\(s\) outside 1\.\.10 \(values 11, 255; first at index 0\)",
                         r"expected labels 1\.\.10", old_defect="accepted silently as labels 10 and 254"),
}


def _load(case: Case, root: Path):
    if case.dataset == "cifar10":
        return load_cifar10(root, case.split)
    return load_stl10(root, case.split)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_dataset_file(name, tmp_path, capsys):
    case = CASES[name]
    root = tmp_path / "data"
    root.mkdir()
    folder = (_write_cifar if case.dataset == "cifar10" else _write_stl)(root)
    _load(case, root)  # the untouched folder loads: the error below is the spoilt file's
    path = folder / case.file
    marker = tmp_path / "code_ran"
    case.spoil(path, marker)

    with pytest.raises(DataFormatError) as info:
        _load(case, root)
    message = str(info.value)
    assert str(path) in message
    assert info.match(case.found) and info.match(case.expected)
    assert "\n" not in message  # one message, not a traceback or a dump
    assert not marker.exists()

    if case.split != "train":  # the command line reads the training split only
        return
    out = tmp_path / "out"
    rc = cli.main(["run", "linear_bt", "--smoke", "--dataset", case.dataset, "--data-dir", str(root),
                   "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert "Traceback" not in err
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


def test_restricted_unpickler_reads_every_protocol_and_numpy_layout(tmp_path):
    # The allow-list must not refuse what real writers produce: protocols 2-5 (2 stores bytes via _codecs.encode,
    # 5 stores arrays via _frombuffer), C- and Fortran-ordered arrays, NumPy arrays for the labels, and NumPy 1.x's
    # module name numpy.core.multiarray (which the official files, written by Python 2 and NumPy 1.x, name).
    folder = _write_cifar(tmp_path)
    rng = np.random.default_rng(3)
    want_x, want_y = [], []
    for i, protocol in zip(range(1, 6), (2, 3, 4, 5, 2)):
        batch = _cifar_batch(CIFAR_SIZES[i - 1], rng)
        if i == 3:
            batch[b"data"] = np.asfortranarray(batch[b"data"])
        if i == 4:
            batch[b"labels"] = np.asarray(batch[b"labels"], np.int64)
        raw = pickle.dumps(batch, protocol=protocol)
        if i == 5:  # protocol 2's GLOBAL opcode names the module as a text line: rename it as NumPy 1.x writes it
            raw = raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
            assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw
        (folder / f"data_batch_{i}").write_bytes(raw)
        want_x.append(batch[b"data"])
        want_y.append(batch[b"labels"])
    d = load_cifar10(tmp_path)
    np.testing.assert_array_equal(d.labels, np.concatenate(want_y))
    want = np.concatenate(want_x).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1) / np.float32(255)
    np.testing.assert_array_equal(d.images, want.astype(np.float32))

