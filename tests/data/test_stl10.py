"""STL-10: the column-major binary release, official folds, and the unlabeled stream beside the labeled one."""

import numpy as np
import pytest
import torch

from tests.helpers import check_option_type, set_up
from zoo_lightning.batch import TwoStreamBatch
from zoo_lightning.data import DevicePipeline, STL10DataModule
from zoo_lightning.data.stl10 import read_stl10_images


def _module(root, **kwargs) -> STL10DataModule:
    return set_up(STL10DataModule, root, **{"val_size": 5, "batch_size": 4, **kwargs})


def test_pattern_in_one_corner_of_one_channel_comes_out_there(tmp_path, stl10):
    root, _ = stl10
    image = np.zeros((3, 96, 96), dtype=np.uint8)
    image[1, 0:4, 90:96] = 255  # green, top-right corner, 4 rows x 6 columns
    path = tmp_path / "one_X.bin"
    image.transpose(0, 2, 1).tofile(path)  # as the release stores it: column by column
    read = read_stl10_images(path)
    assert read.shape == (1, 3, 96, 96)
    assert read[0, 1, 0:4, 90:96].min() == 255 and read[0].sum() == 255 * 24


def test_labels_shift_to_zero_based_and_images_round_trip(stl10):
    root, arrays = stl10
    data = _module(root, val_size=0)
    images, labels = data.train_set.images, data.train_set.labels
    assert torch.equal(images, torch.from_numpy(arrays["train_images"]))
    assert labels.tolist() == arrays["train_labels"].tolist() and labels.min() >= 0
    test_images, test_labels = data.test_set.images, data.test_set.labels
    assert torch.equal(test_images, torch.from_numpy(arrays["test_images"]))
    assert test_labels.tolist() == arrays["test_labels"].tolist()
    assert data.class_names[2] == "car" and data.image_size == 96


def test_folds_come_from_fold_indices(stl10):
    root, arrays = stl10
    data = _module(root, fold=3, val_size=6)
    fold = np.sort(arrays["folds"][3])
    assert torch.equal(data.train_set.images, torch.from_numpy(arrays["train_images"][fold]))
    assert len(data.val_set.images) == 6
    val_rows = {bytes(x.numpy()) for x in data.val_set.images.flatten(1)[:, :64]}
    assert not val_rows & {bytes(x) for x in arrays["train_images"][fold].reshape(len(fold), -1)[:, :64]}


def test_the_parser_takes_only_the_ten_official_folds():
    check_option_type(STL10DataModule, "fold", "10", "9", 9)


def test_mean_std_equal_numpys_and_the_cache_follows_the_source(stl10):
    root, _ = stl10
    data = _module(root)
    pixels = data.train_set.images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(data.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(data.std, pixels.std(axis=(0, 2, 3)), rtol=1e-10)


def test_unlabeled_split_is_a_memmap_not_a_copy(stl10):
    root, arrays = stl10
    data = _module(root, unlabeled=True)
    unlabeled = data.unlabeled_images()
    # A view over the on-disk (column-major) bytes, mapped from the file: no copy was made.
    assert unlabeled.stride() == (3 * 96 * 96, 96 * 96, 1, 96)
    assert str(root / "stl10_binary" / "unlabeled_X.bin") in open("/proc/self/maps").read()
    assert torch.equal(unlabeled[7], torch.from_numpy(arrays["unlabeled_images"][7]))
    loader = data.train_dataloader()
    batch = next(iter(loader))
    assert isinstance(batch, TwoStreamBatch) and batch.unlabeled.shape == (4, 3, 96, 96)
    assert len(loader) == len(loader.labeled) == 15 // 4 == 3  # an epoch: one pass over 15 labeled images
    out = data.on_after_batch_transfer(batch, 0)
    assert isinstance(out, TwoStreamBatch)
    assert out.unlabeled.dtype == torch.float32 and out.labeled[0].dtype == torch.float32
    assert out.labeled[1] is batch.labeled[1]


def test_bad_files_name_the_file_and_sizes(stl10):
    root, _ = stl10
    folder = root / "stl10_binary"
    (folder / "train_X.bin").write_bytes((folder / "train_X.bin").read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"train_X.bin has 552,860 bytes.*27,648"):
        _module(root)


def test_label_count_mismatch(stl10):
    root, _ = stl10
    folder = root / "stl10_binary"
    (folder / "train_y.bin").write_bytes((folder / "train_y.bin").read_bytes()[:-1])
    with pytest.raises(ValueError, match="19 labels but its images file 20 images"):
        _module(root)


def test_missing_release_lists_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_X.bin.*--data.download true"):
        STL10DataModule(data_dir=str(tmp_path), download=False).prepare_data()


def test_resize_for_imagenet_stems(stl10):
    root, _ = stl10
    data = _module(root, image_size=224)
    images = data.on_after_batch_transfer(next(iter(data.val_dataloader())), 0)[0]
    assert images.shape == (4, 3, 224, 224)


def test_cli_fit_then_distill_with_the_unlabeled_stream(stl10, tmp_path):
    from zoo_lightning.cli import main

    root, _ = stl10
    common = [
        "--data.data_dir",
        str(root),
        "--data.val_size",
        "4",
        "--data.batch_size",
        "4",
        "--data.image_size",
        "32",
        "--trainer.max_steps",
        "2",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "logs"),
    ]
    main(["fit", "--config", "resnet18_stl10.yaml", "--model.backbone", "cnn", *common])
    teacher = tmp_path / "logs" / "resnet18_stl10" / "version_0" / "checkpoints" / "last.ckpt"
    assert teacher.is_file()
    main(
        [
            "fit",
            "--config",
            "distill_resnet50_to_resnet18_stl10.yaml",
            "--model.backbone",
            "cnn",
            "--model.stem",
            "cifar",
            "--model.objective.init_args.teacher",
            str(teacher),
            *common,
        ]
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "logs" / "distill_resnet50_to_resnet18_stl10" / "version_0"
    assert "train/kd_unlabeled" in EventAccumulator(str(run)).Reload().Tags()["scalars"]


def test_download_with_the_wrong_checksum_is_refused_and_not_extracted(tmp_path, monkeypatch):
    import io
    import tarfile
    from pathlib import Path

    from torchvision.datasets import utils

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        member = tarfile.TarInfo("stl10_binary/train_X.bin")
        member.size = 4
        tar.addfile(member, io.BytesIO(b"\0" * 4))
    monkeypatch.setattr(utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(
        utils, "_urlretrieve", lambda url, filename, chunk_size=0: Path(filename).write_bytes(buffer.getvalue())
    )
    with pytest.raises(ValueError, match="does not have the official MD5"):
        STL10DataModule(data_dir=str(tmp_path), download=True).prepare_data()
    assert list(tmp_path.iterdir()) == []  # no archive kept, nothing extracted


def test_the_cli_sees_every_base_option_and_the_hyperparameters_keep_them(stl10):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(STL10DataModule, "data")
    options = {action.dest for action in parser._actions}
    assert {"data.fold", "data.unlabeled", "data.batch_size", "data.pipeline"} <= options
    # Pipeline options without class_path/init_args: the short spelling works.
    config = parser.parse_args(["--data.pipeline.mix", "cutmix", "--data.pipeline.train_sizes", "{0: 16}"])
    pipeline = parser.instantiate_classes(config).data.pipeline
    assert (type(pipeline), pipeline.mix, pipeline.train_sizes, pipeline.crop_padding) == (
        DevicePipeline,
        "cutmix",
        {0: 16},
        None,
    )
    root, _ = stl10
    data = _module(root, fold=3, pipeline=DevicePipeline(mix="cutmix"))
    # STL-10's crop padding: the pipeline's default of one eighth of the side, 12 at 96 pixels.
    assert (data.hparams.fold, data.hparams.batch_size, data.pipeline.padding, data.pipeline.mix) == (
        3,
        4,
        12,
        "cutmix",
    )
    assert "pipeline" not in data.hparams  # no module instance in what checkpoints store
