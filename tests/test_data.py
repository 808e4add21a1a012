"""leanvision.data: dataset layouts, root resolution, corrupt files, subsets, the batch loader."""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from leanvision.data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    ImageDataset,
    crop_flip,
    load_dataset,
    make_loader,
)
from leanvision.data import _fs as fs
from leanvision.data import cifar as cifar_mod
from leanvision.errors import ConfigError, DataError, UnknownNameError

# ----------------------------------------------------------------------------------------------- helpers


def write_idx(path: Path, arr: np.ndarray, *, magic: int | None = None, count: int | None = None) -> Path:
    """Write an unsigned-byte IDX file (gzip'd when the name ends in .gz), optionally with a wrong header."""
    dims = list(arr.shape)
    if count is not None:
        dims[0] = count
    header = (magic if magic is not None else 0x0800 | arr.ndim).to_bytes(4, "big")
    header += b"".join(d.to_bytes(4, "big") for d in dims)
    payload = header + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def make_mnist(root: Path, *, folder: str = "MNIST", n: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte.gz", labels)
        out[split] = images
    return out


def write_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_cifar_batches(d: Path, *, per_batch: int = 10, bytes_keys: bool = False, protocol: int = 4) -> None:
    """A tiny torchvision-style cifar-10-batches-py: 5 train batches + test batch + batches.meta."""
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)

    def key(k: str) -> str | bytes:
        return k.encode() if bytes_keys else k

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            key("data"): rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            key("labels"): [i % 10 for i in range(per_batch)],
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {key("label_names"): CIFAR10_CLASSES, key("num_vis"): 3072}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))


def make_cifar_tree(root: Path, *, per_class: int = 2) -> dict[str, np.ndarray]:
    """train/<class>/*.png + test/<class>/*.png with random 32x32 RGB pixels; returns them in load order."""
    rng = np.random.default_rng(1)
    out = {}
    for split in ("train", "test"):
        imgs = []
        for c in CIFAR10_CLASSES:
            for i in range(per_class):
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                write_png(root / split / c / f"{i:04d}.png", arr)
                imgs.append(arr.transpose(2, 0, 1))
        out[split] = np.stack(imgs)
    return out


def tar_dir(src: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        for split in ("train", "test"):
            tf.add(src / split, arcname=split)
    return archive


# ------------------------------------------------------------------------------------------- real data


@pytest.mark.parametrize(("name", "mean", "std"), [("mnist", 0.1307, 0.3081), ("fashion_mnist", 0.2860, 0.3530)])
def test_real_mnist_like(shared_data: Path, name: str, mean: float, std: float) -> None:
    train = load_dataset(name, root=shared_data, split="train")
    test = load_dataset(name, root=shared_data, split="test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.input_size == (1, 28, 28) and train.num_classes == 10
    assert train.targets.dtype == torch.int64
    assert train.targets.min() == 0 and train.targets.max() == 9
    assert torch.bincount(test.targets).min() > 800  # every class well represented
    assert train.mean == (mean,) and train.std == (std,)
    assert train.images.float().mean().item() / 255 == pytest.approx(mean, abs=1e-3)
    assert train.images.float().div(255).std().item() == pytest.approx(std, abs=1e-3)
    assert train.train_augment is False


def test_real_mnist_root_may_be_the_dataset_or_raw_dir(shared_data: Path) -> None:
    ref = load_dataset("mnist", root=shared_data, split="test")
    for root in (shared_data / "MNIST", shared_data / "MNIST" / "raw"):
        ds = load_dataset("mnist", root=root, split="test")
        assert torch.equal(ds.images, ref.images) and torch.equal(ds.targets, ref.targets)


@pytest.fixture(scope="session")
def cifar_train(shared_data: Path) -> ImageDataset:
    return load_dataset("cifar10", root=shared_data, split="train")


@pytest.fixture(scope="session")
def cifar_test(shared_data: Path) -> ImageDataset:
    return load_dataset("cifar10", root=shared_data, split="test")


def test_real_cifar10_from_the_shared_archive(cifar_train: ImageDataset, cifar_test: ImageDataset) -> None:
    assert (len(cifar_train), len(cifar_test)) == (50000, 10000)
    assert cifar_train.images.shape == (50000, 3, 32, 32) and cifar_train.images.dtype == torch.uint8
    assert cifar_train.classes == CIFAR10_CLASSES == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ]  # fmt: skip
    assert torch.bincount(cifar_train.targets).tolist() == [5000] * 10
    assert torch.bincount(cifar_test.targets).tolist() == [1000] * 10
    channel_mean = cifar_train.images.float().div(255).mean(dim=(0, 2, 3))
    assert torch.allclose(channel_mean, torch.tensor(CIFAR10_MEAN), atol=2e-3)
    assert cifar_train.mean == CIFAR10_MEAN and cifar_train.std == CIFAR10_STD
    assert cifar_train.train_augment is True and cifar_train.input_size == (3, 32, 32)


def test_real_cifar10_second_load_reads_the_decoded_cache(
    shared_data: Path, cifar_test: ImageDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_unpack(*args: object) -> None:
        raise AssertionError("the archive was decoded again")

    monkeypatch.setattr(cifar_mod, "_unpack_archive", no_unpack)
    again = load_dataset("cifar10", root=shared_data, split="test")
    assert torch.equal(again.images, cifar_test.images) and torch.equal(again.targets, cifar_test.targets)
    assert list(Path(os.environ["LEANVISION_CACHE"]).glob("cifar10/cifar10-jpeg-q75-*/test.npz"))


def test_torch_dataloader_works_on_image_dataset(cifar_test: ImageDataset) -> None:
    x, y = next(iter(torch.utils.data.DataLoader(cifar_test, batch_size=4, shuffle=False)))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    x0, y0 = cifar_test[0]
    assert torch.equal(x[0], x0) and y0 == int(y[0]) and isinstance(y0, int)


# ---------------------------------------------------------------------------------------------- digits


def test_digits_fixed_stratified_split() -> None:
    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test", seed=123)
    assert len(train) + len(test) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0  # 16 -> 255, 0 -> 0
    per_class_test = torch.bincount(test.targets, minlength=10)
    per_class_all = per_class_test + torch.bincount(train.targets, minlength=10)
    assert torch.equal(per_class_test, per_class_all // 5)  # every 5th example of each class
    # The split ignores the seed; the stats come from the training split for both splits.
    assert torch.equal(load_dataset("digits", split="test", seed=7).images, test.images)
    expected = train.images.double().div(255)
    assert train.mean[0] == pytest.approx(expected.mean().item(), abs=1e-9)
    assert train.std[0] == pytest.approx(expected.std(unbiased=False).item(), abs=1e-9)
    assert test.mean == train.mean and test.std == train.std


def test_image_size_resizes_any_dataset() -> None:
    ds = load_dataset("digits", image_size=16)
    assert ds.input_size == (1, 16, 16) and ds.images.dtype == torch.uint8
    assert load_dataset("digits", image_size=(12, 10)).input_size == (1, 12, 10)
    with pytest.raises(ConfigError, match="image_size must be a positive int"):
        load_dataset("digits", image_size=(0, 4))


def test_unknown_dataset_and_split() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown dataset 'mnsit'.*Did you mean: mnist"):
        load_dataset("mnsit")
    with pytest.raises(ConfigError, match="has splits train, test, val; got split='valid'"):
        load_dataset("digits", split="valid")
    with pytest.raises(ConfigError, match=r"split='val' is held out from the training split: pass val_size"):
        load_dataset("digits", split="val")


def test_validation_split_is_held_out_of_train_balanced_and_fixed() -> None:
    full = load_dataset("digits", split="train")
    train = load_dataset("digits", split="train", val_size=0.1)
    val = load_dataset("digits", split="val", val_size=0.1)
    assert (len(train), len(val)) == (len(full) - 144, 144) and val.split == "val" and train.split == "train"
    rows = lambda ds: {tuple(x.flatten().tolist()) for x in ds.images}  # noqa: E731
    assert rows(train) | rows(val) == rows(full) and not rows(train) & rows(val)
    assert torch.bincount(val.targets).tolist() == [15] * 4 + [14] * 6
    # Fixed by val_seed alone: a training subset drawn with another seed never overlaps it.
    sub = load_dataset("digits", split="train", val_size=144, subset=500, seed=7)
    assert torch.equal(load_dataset("digits", split="val", val_size=144).images, val.images)
    assert not rows(sub) & rows(val)
    assert make_loader(val).augment is False
    for bad in (0.0 + 1e-9, 1.0, len(full), 5, -3, True):
        with pytest.raises(ConfigError, match="val_size must be a fraction in"):
            full.split_off(bad)


def test_normalisation_constants_have_one_source() -> None:
    from leanvision.data import constants
    from leanvision.models import model_card

    assert cifar_mod.CIFAR10_STD is constants.CIFAR10_STD
    assert model_card("resnet20").std == constants.CIFAR10_STD and model_card("resnet20").mean == constants.CIFAR10_MEAN
    assert model_card("quickstart_cnn").mean == constants.MNIST_MEAN


# --------------------------------------------------------------------------------------- mnist (synthetic)


def test_synthetic_mnist_pixels_and_layouts(tmp_path: Path) -> None:
    written = make_mnist(tmp_path)
    ds = load_dataset("mnist", root=tmp_path, split="test")
    assert torch.equal(ds.images[:, 0], torch.from_numpy(written["test"]))
    assert ds.targets.tolist() == [i % 10 for i in range(20)]
    # Uncompressed files (as torchvision leaves them after extraction) are read too.
    plain = tmp_path / "plain" / "MNIST" / "raw"
    plain.mkdir(parents=True)
    for f in (tmp_path / "MNIST" / "raw").glob("*.gz"):
        (plain / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
    assert torch.equal(load_dataset("mnist", root=tmp_path / "plain", split="test").images, ds.images)
    make_mnist(tmp_path / "fm", folder="FashionMNIST")
    assert len(load_dataset("fashion_mnist", root=tmp_path / "fm")) == 20


def test_root_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mnist(tmp_path)
    monkeypatch.delenv("LEANVISION_DATA", raising=False)
    with pytest.raises(DataError, match=r"root argument \(not given\) and \$LEANVISION_DATA \(not set\)"):
        load_dataset("mnist")
    monkeypatch.setenv("LEANVISION_DATA", str(tmp_path))
    assert len(load_dataset("mnist", split="test")) == 20
    # The argument wins over the environment.
    monkeypatch.setenv("LEANVISION_DATA", str(tmp_path / "nowhere"))
    assert len(load_dataset("mnist", root=tmp_path, split="test")) == 20
    with pytest.raises(DataError, match=r"nowhere \(from \$LEANVISION_DATA\) does not exist"):
        load_dataset("mnist")
    with pytest.raises(DataError, match=r"missing \(from the root argument\) does not exist"):
        load_dataset("mnist", root=tmp_path / "missing")


def test_missing_dataset_lists_paths_and_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"mnist train split not found: .*MNIST/raw, .*accepted layout: MNIST/raw"):
        load_dataset("mnist", root=tmp_path)
    with pytest.raises(DataError, match=r"CIFAR-10 not found under .*tried .*cifar-10-batches-py.*Accepted layouts"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DataError, match="no class folders under"):
        load_dataset("image_folder", root=tmp_path)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p: p.write_bytes(b"this is not gzip"), "corrupt or truncated gzip"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "corrupt or truncated gzip"),
        (lambda p: write_idx(p, np.zeros((20, 28, 28), np.uint8), magic=0x0801), "IDX magic 0x00000801"),
        (lambda p: write_idx(p, np.zeros((20, 28, 28), np.uint8), count=25), "declares 25 items.*wrong item"),
        (lambda p: write_idx(p, np.zeros((19, 28, 28), np.uint8)), "holds 19 images but .* 20 labels"),
    ],
    ids=["bad-gzip", "truncated-gzip", "wrong-magic", "wrong-count", "label-image-mismatch"],
)
def test_corrupt_idx_files(tmp_path: Path, corrupt, message: str) -> None:  # type: ignore[no-untyped-def]
    make_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    corrupt(path)
    with pytest.raises(DataError, match=message) as info:
        load_dataset("mnist", root=tmp_path)
    assert str(path) in str(info.value)


def test_corrupt_labels_out_of_range(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    path = write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", np.full(20, 12, np.uint8))
    with pytest.raises(DataError, match=r"label 12, outside 0..9") as info:
        load_dataset("mnist", root=tmp_path, split="test")
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------- cifar10 (synthetic)


@pytest.mark.parametrize(("bytes_keys", "protocol"), [(False, 4), (True, 2), (False, 5)])
def test_cifar_pickle_layout(tmp_path: Path, bytes_keys: bool, protocol: int) -> None:
    batches = tmp_path / "cifar-10-batches-py"
    make_cifar_batches(batches, bytes_keys=bytes_keys, protocol=protocol)
    train = load_dataset("cifar10", root=tmp_path)
    test = load_dataset("cifar10", root=tmp_path, split="test")
    assert (len(train), len(test)) == (50, 10)
    first = pickle.loads((batches / "data_batch_1").read_bytes())
    data = first[b"data" if bytes_keys else "data"]
    assert torch.equal(train.images[0], torch.from_numpy(data[0].reshape(3, 32, 32)))  # R, G, B planes
    assert train.targets[:10].tolist() == list(range(10)) and train.classes == CIFAR10_CLASSES
    # The batches folder itself, or under root/cifar10, are accepted roots too.
    assert len(load_dataset("cifar10", root=batches, split="test")) == 10
    (tmp_path / "nested" / "cifar10").mkdir(parents=True)
    batches.rename(tmp_path / "nested" / "cifar10" / "cifar-10-batches-py")
    assert len(load_dataset("cifar10", root=tmp_path / "nested", split="test")) == 10


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x80\x04garbage", "cannot read CIFAR batch"),
        (b"", "cannot read CIFAR batch .*EOFError"),
        (pickle.dumps([1, 2, 3]), "holds a list, not a dict"),
        (pickle.dumps({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}), r"must be uint8 \[N, 3072\]"),
        (pickle.dumps({"data": np.zeros((4, 3072), np.uint8), "labels": [0] * 3}), "4 images but 3 labels"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}), "labels outside 0..9"),
        (pickle.dumps({"data": os.system}), "refusing to load global posix.system"),
    ],
    ids=["garbage", "empty", "not-dict", "bad-shape", "count-mismatch", "bad-label", "unsafe-global"],
)
def test_corrupt_cifar_batches(tmp_path: Path, payload: bytes, message: str) -> None:
    batches = tmp_path / "cifar-10-batches-py"
    make_cifar_batches(batches)
    (batches / "data_batch_3").write_bytes(payload)
    with pytest.raises(DataError, match=message) as info:
        load_dataset("cifar10", root=tmp_path)
    assert str(batches / "data_batch_3") in str(info.value)


def test_cifar_missing_batch(tmp_path: Path) -> None:
    batches = tmp_path / "cifar-10-batches-py"
    make_cifar_batches(batches)
    (batches / "data_batch_5").unlink()
    with pytest.raises(DataError, match=r"train split incomplete: missing .*data_batch_5"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_image_folder_layout(tmp_path: Path) -> None:
    written = make_cifar_tree(tmp_path / "cifar10")
    ds = load_dataset("cifar10", root=tmp_path, split="test")
    assert torch.equal(ds.images, torch.from_numpy(written["test"]))
    assert ds.targets.tolist() == [i // 2 for i in range(20)]
    (tmp_path / "cifar10" / "train" / "cat").rename(tmp_path / "cifar10" / "train" / "kitten")
    with pytest.raises(DataError, match=r"has class folders .*kitten.*expected the 10 CIFAR-10 classes"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_archive_is_decoded_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("LEANVISION_CACHE", str(cache))
    written = make_cifar_tree(tmp_path / "src")
    data = tmp_path / "data" / "cifar10"
    data.mkdir(parents=True)
    tar_dir(tmp_path / "src", data / "cifar10-jpeg-q75.tar.gz")
    train = load_dataset("cifar10", root=tmp_path / "data")
    assert torch.equal(train.images, torch.from_numpy(written["train"]))
    assert train.targets.tolist() == [i // 2 for i in range(20)]
    (entry,) = (cache / "cifar10").iterdir()  # one complete entry, no temp leftovers
    assert sorted(p.name for p in entry.iterdir()) == ["test.npz", "train.npz"]

    calls = []
    unpack = cifar_mod._unpack_archive
    monkeypatch.setattr(cifar_mod, "_unpack_archive", lambda *a: calls.append(a))
    test = load_dataset("cifar10", root=tmp_path / "data", split="test")
    assert calls == [] and torch.equal(test.images, torch.from_numpy(written["test"]))
    monkeypatch.setattr(cifar_mod, "_unpack_archive", unpack)

    # A damaged cache file is rebuilt from the archive instead of failing.
    (entry / "test.npz").write_bytes(b"junk")
    assert torch.equal(load_dataset("cifar10", root=tmp_path / "data", split="test").images, test.images)


def test_corrupt_archive_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("LEANVISION_CACHE", str(cache))
    make_cifar_tree(tmp_path / "src", per_class=1)
    good = tar_dir(tmp_path / "src", tmp_path / "good.tar.gz").read_bytes()
    archive = tmp_path / "data" / "cifar10-jpeg-q75.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt or truncated") as info:
        load_dataset("cifar10", root=tmp_path / "data")
    assert str(archive) in str(info.value)
    assert list((cache / "cifar10").iterdir()) == []
    archive.write_bytes(b"not a tar at all")
    with pytest.raises(DataError, match=r"cannot unpack .*cifar10-jpeg-q75.tar.gz"):
        load_dataset("cifar10", root=tmp_path / "data")


def test_corrupt_image_inside_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANVISION_CACHE", str(tmp_path / "cache"))
    make_cifar_tree(tmp_path / "src", per_class=1)
    bad = tmp_path / "src" / "train" / "dog" / "0000.png"
    bad.write_bytes(bad.read_bytes()[:40])
    tar_dir(tmp_path / "src", tmp_path / "cifar10.tar.gz")
    with pytest.raises(DataError, match=r"cannot decode image .*cifar10.tar.gz/train/dog/0000.png"):
        load_dataset("cifar10", root=tmp_path)
    assert list((tmp_path / "cache" / "cifar10").iterdir()) == []


def test_build_once_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANVISION_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "src.bin"
    source.write_bytes(b"x")

    def killed(tmp: Path) -> None:
        (tmp / "half.npz").write_bytes(b"partial")
        raise KeyboardInterrupt  # stands in for a run killed mid-build

    with pytest.raises(KeyboardInterrupt):
        fs.build_once(source, namespace="t", build=killed)
    assert list((tmp_path / "cache" / "t").iterdir()) == []
    built = fs.build_once(source, namespace="t", build=lambda tmp: (tmp / "ok").write_text("1"))
    assert (built / "ok").read_text() == "1"
    # A later call finds the complete copy and does not build again.
    assert fs.build_once(source, namespace="t", build=killed) == built


# ---------------------------------------------------------------------------------------- image_folder


def make_folder(root: Path) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(2)
    out: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for split, n in (("train", 3), ("test", 2)):
        for c in ("cat", "ant", "bee"):
            for i in range(n):
                arr = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
                write_png(root / split / c / f"img{i}.png", arr)
    for split in out:
        for c in ("ant", "bee", "cat"):  # load order: sorted classes, sorted files
            out[split] += [np.asarray(Image.open(p)) for p in sorted((root / split / c).glob("*.png"))]
    return out


def test_image_folder_with_splits(tmp_path: Path) -> None:
    written = make_folder(tmp_path)
    train = load_dataset("image_folder", root=tmp_path)
    test = load_dataset("image_folder", root=tmp_path, split="test")
    assert train.classes == ["ant", "bee", "cat"] and (len(train), len(test)) == (9, 6)
    assert torch.equal(test.images, torch.from_numpy(np.stack(written["test"]).transpose(0, 3, 1, 2)))
    assert test.targets.tolist() == [0, 0, 1, 1, 2, 2]
    expected = train.images.double().div(255)
    assert train.mean == pytest.approx(tuple(expected.mean(dim=(0, 2, 3)).tolist()))
    assert test.mean == train.mean and test.std == train.std  # normalised with the training statistics
    assert train.train_augment is False and train.input_size == (3, 6, 5)
    with pytest.raises(DataError, match=r"no 'val' split under .*found: train, test"):
        load_dataset("image_folder", root=tmp_path, split="val")


def test_image_folder_without_splits_and_grayscale(tmp_path: Path) -> None:
    for c in ("a", "b"):
        for i in range(2):
            write_png(tmp_path / c / f"{i}.png", np.full((4, 4), 10 * i + (c == "b"), np.uint8))
    ds = load_dataset("image_folder", root=tmp_path)
    assert ds.input_size == (1, 4, 4) and ds.classes == ["a", "b"] and ds.targets.tolist() == [0, 0, 1, 1]
    assert ds.images[:, 0, 0, 0].tolist() == [0, 10, 1, 11]
    # One colour image turns the whole dataset RGB (grey images are replicated over channels).
    write_png(tmp_path / "b" / "2.png", np.zeros((4, 4, 3), np.uint8))
    ds = load_dataset("image_folder", root=tmp_path)
    assert ds.input_size == (3, 4, 4) and torch.equal(ds.images[1, 0], ds.images[1, 2])


def test_image_folder_sizes(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "0.png", np.zeros((8, 8, 3), np.uint8))
    write_png(tmp_path / "b" / "0.png", np.zeros((10, 6, 3), np.uint8))
    with pytest.raises(DataError, match=r"different sizes: .*0.png is 8x8 but .*0.png is 10x6; pass image_size"):
        load_dataset("image_folder", root=tmp_path)
    assert load_dataset("image_folder", root=tmp_path, image_size=(5, 7)).input_size == (3, 5, 7)
    assert load_dataset("image_folder", root=tmp_path, image_size=8).input_size == (3, 8, 8)


@pytest.mark.parametrize(
    "corrupt",
    [lambda p: p.write_bytes(b"definitely not an image"), lambda p: p.write_bytes(p.read_bytes()[:50])],
    ids=["unreadable", "truncated"],
)
def test_image_folder_corrupt_image(tmp_path: Path, corrupt) -> None:  # type: ignore[no-untyped-def]
    make_folder(tmp_path)
    bad = tmp_path / "train" / "bee" / "img1.png"
    corrupt(bad)
    with pytest.raises(DataError, match=r"cannot decode image .*truncated, corrupt or not an image") as info:
        load_dataset("image_folder", root=tmp_path)
    assert str(bad) in str(info.value)


# ------------------------------------------------------------------------------------------------ subsets


def tiny_dataset(n_per_class: tuple[int, ...] = (7, 7, 7), *, split: str = "train", augment: bool = False):
    targets = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    images = torch.randint(0, 256, (len(targets), 3, 6, 5), dtype=torch.uint8)
    return ImageDataset(
        images,
        targets,
        classes=[f"c{i}" for i in range(len(n_per_class))],
        name="tiny",
        split=split,
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.3),
        train_augment=augment,
    )


def test_subset_is_class_balanced_and_seeded() -> None:
    ds = tiny_dataset()
    sub = ds.subset(8, seed=0)
    assert torch.bincount(sub.targets).tolist() == [3, 3, 2]  # remainder to the first classes
    assert torch.equal(sub.images, ds.subset(8, seed=0).images)
    picks = {tuple(ds.subset(8, seed=s).images[:, 0, 0, 0].tolist()) for s in range(5)}
    assert len(picks) > 1  # the seed changes the choice
    # Each chosen image is one of the originals with its own label.
    for img, y in zip(sub.images, sub.targets, strict=True):
        assert any(torch.equal(img, o) for o in ds.images[ds.targets == y])
    digits = load_dataset("digits", subset=100, seed=3)
    assert torch.bincount(digits.targets).tolist() == [10] * 10
    assert digits.mean == load_dataset("digits").mean


def test_subset_errors() -> None:
    ds = tiny_dataset((7, 2, 7))
    with pytest.raises(ConfigError, match="subset=22 exceeds the 16 examples"):
        ds.subset(22)
    with pytest.raises(ConfigError, match=r"smaller than the number of classes \(3\)"):
        ds.subset(2)
    with pytest.raises(ConfigError, match="needs 3 examples of class 'c1' but the split has 2"):
        ds.subset(9)


# ------------------------------------------------------------------------------------------------- loader


def naive_crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int):
    out = []
    for img, (dy, dx), flip in zip(images, offsets.tolist(), flips.tolist(), strict=True):
        padded = F.pad(img, (padding,) * 4)
        crop = padded[:, dy : dy + img.shape[1], dx : dx + img.shape[2]]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


@pytest.mark.parametrize(("channels", "h", "w", "padding"), [(3, 32, 32, 4), (1, 7, 5, 2), (2, 4, 6, 0)])
def test_crop_flip_matches_per_sample_reference(channels: int, h: int, w: int, padding: int) -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (17, channels, h, w), dtype=torch.uint8, generator=gen)
    offsets = torch.randint(0, 2 * padding + 1, (17, 2), generator=gen)
    flips = torch.randint(0, 2, (17,), generator=gen).bool()
    out = crop_flip(images, offsets, flips, padding=padding)
    assert out.dtype == torch.uint8 and torch.equal(out, naive_crop_flip(images, offsets, flips, padding))
    centre = torch.full((17, 2), padding)
    assert torch.equal(crop_flip(images, centre, torch.zeros(17, dtype=torch.bool), padding=padding), images)


def test_loader_batches_are_the_planned_augmentation() -> None:
    ds = tiny_dataset(augment=True)
    loader = make_loader(ds, 5, seed=3)
    assert loader.augment is True
    loader.set_epoch(2)
    plan = loader.epoch_plan(2)
    xs, ys = zip(*loader, strict=True)
    mean, std = torch.tensor(ds.mean).view(3, 1, 1), torch.tensor(ds.std).view(3, 1, 1)
    ref = naive_crop_flip(ds.images[plan.order], plan.offsets, plan.flips, 4).float() / 255
    assert torch.allclose(torch.cat(xs), (ref - mean) / std, atol=1e-6)
    assert torch.equal(torch.cat(ys), ds.targets[plan.order])
    assert sorted(plan.order.tolist()) == list(range(len(ds)))  # each example exactly once


def test_loader_determinism_and_epochs() -> None:
    ds = tiny_dataset(augment=True)

    def batches(loader) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
        return [x for x, _ in loader]

    a, b = make_loader(ds, 4, seed=1), make_loader(ds, 4, seed=1)
    a.set_epoch(5)
    b.set_epoch(5)
    assert all(torch.equal(x, y) for x, y in zip(batches(a), batches(b), strict=True))
    assert all(torch.equal(x, y) for x, y in zip(batches(a), batches(b), strict=True))  # epoch stays fixed
    assert not torch.equal(a.epoch_plan(5).order, a.epoch_plan(6).order)
    assert not torch.equal(a.epoch_plan(5).order, make_loader(ds, 4, seed=2).epoch_plan(5).order)
    # Without set_epoch each new iteration advances the epoch: epochs 0, 1, ...
    auto, fixed = make_loader(ds, 4, seed=1), make_loader(ds, 4, seed=1)
    for epoch in range(2):
        fixed.set_epoch(epoch)
        assert all(torch.equal(x, y) for x, y in zip(batches(auto), batches(fixed), strict=True))
    # The global RNG is neither used nor disturbed.
    state = torch.get_rng_state()
    batches(auto)
    assert torch.equal(state, torch.get_rng_state())


def test_loader_normalisation_len_and_drop_last() -> None:
    ds = tiny_dataset()  # 21 examples
    loader = make_loader(ds, 8, shuffle=False)
    assert loader.augment is False and len(loader) == 3
    xs, ys = zip(*loader, strict=True)
    assert [len(y) for y in ys] == [8, 8, 5]
    x = torch.cat(xs)
    assert torch.equal(x, torch.stack([ds[i][0] for i in range(len(ds))]))
    mean, std = torch.tensor(ds.mean).view(3, 1, 1), torch.tensor(ds.std).view(3, 1, 1)
    assert torch.equal(torch.round((x * std + mean) * 255).to(torch.uint8), ds.images)
    dropped = make_loader(ds, 8, drop_last=True)
    assert len(dropped) == 2 and [len(y) for _, y in dropped] == [8, 8]
    assert len(make_loader(ds, 7, drop_last=True)) == 3 and len(make_loader(ds, 100)) == 1


def test_loader_augment_default_follows_the_dataset() -> None:
    assert make_loader(tiny_dataset(augment=True, split="train")).augment is True
    assert make_loader(tiny_dataset(augment=True, split="test")).augment is False
    assert make_loader(tiny_dataset(augment=False)).augment is False
    assert make_loader(tiny_dataset(augment=False), augment=True).augment is True
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        make_loader(tiny_dataset(), 0)


def test_loader_replicas_partition_each_epoch() -> None:
    ds = tiny_dataset()  # 21 examples over 4 replicas: 6 each, 3 repeated to pad
    loaders = [make_loader(ds, 4, seed=9, num_replicas=4, rank=r) for r in range(4)]
    orders = [ld.epoch_plan(0).order for ld in loaders]
    assert all(len(o) == 6 for o in orders) and all(len(ld) == 2 for ld in loaders)
    assert set(torch.cat(orders).tolist()) == set(range(21))
    with pytest.raises(ConfigError, match="need 0 <= rank < num_replicas"):
        make_loader(ds, num_replicas=2, rank=2)


def test_loader_full_epoch_over_real_cifar(cifar_test: ImageDataset) -> None:
    loader = make_loader(cifar_test, 256, augment=True, seed=4)
    seen = torch.cat([y for _, y in loader])
    assert torch.equal(torch.bincount(seen), torch.bincount(cifar_test.targets))
