"""BatchLoader: whole uint8 batches, per-epoch shuffles, rank shards; TwoStreamLoader pairing two streams."""

import numpy as np
import pytest
import torch

from zoo_lightning.batch import TwoStreamBatch
from zoo_lightning.data.loader import BatchLoader, TwoStreamLoader, as_tensor


def _data(n: int = 50):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    return images, torch.arange(n)


def _epoch_labels(loader: BatchLoader) -> list[int]:
    return [int(v) for _, labels in loader for v in labels]


def test_batches_hold_matching_images_and_labels():
    images, labels = _data()
    loader = BatchLoader(images, labels, batch_size=16, shuffle=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 4 and batches[-1][0].shape == (2, 3, 2, 2)
    for x, y in batches:
        assert x.dtype == torch.uint8 and torch.equal(x[:, 0, 0, 0].long(), y)


def test_drop_last_keeps_only_full_batches():
    images, labels = _data()
    loader = BatchLoader(images, labels, batch_size=16, shuffle=True, drop_last=True)
    assert len(loader) == 3 and all(len(y) == 16 for _, y in loader)


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_get_disjoint_shards_whose_union_is_the_epoch(drop_last):
    images, labels = _data(50)
    epoch = [0]
    loaders = [
        BatchLoader(
            images,
            labels,
            batch_size=8,
            shuffle=True,
            drop_last=drop_last,
            seed=5,
            rank=r,
            world_size=2,
            epoch=lambda: epoch[0],
        )
        for r in range(2)
    ]
    shards = [_epoch_labels(loader) for loader in loaders]
    assert not set(shards[0]) & set(shards[1])
    if drop_last:  # same number of steps on both ranks for the gradient all-reduce
        assert len(loaders[0]) == len(loaders[1]) == 3
    else:  # evaluation sees every sample exactly once
        assert sorted(shards[0] + shards[1]) == list(range(50))
    epoch[0] = 1
    assert _epoch_labels(loaders[0]) != shards[0]


def test_shuffle_differs_per_epoch_and_repeats_per_seed():
    images, labels = _data()
    epoch = [0]
    loader = BatchLoader(images, labels, batch_size=50, shuffle=True, seed=1, epoch=lambda: epoch[0])
    first = _epoch_labels(loader)
    assert _epoch_labels(loader) == first
    epoch[0] = 1
    assert _epoch_labels(loader) != first and sorted(_epoch_labels(loader)) == sorted(first)
    assert _epoch_labels(BatchLoader(images, labels, batch_size=50, shuffle=False)) == list(range(50))


def test_memmapped_images_stay_memmapped(tmp_path):
    path = tmp_path / "x.u8"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(20, 3, 4, 4))
    array[:] = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1)
    array.flush()
    mapped = np.load(path, mmap_mode="r")
    images = as_tensor(mapped)  # read-only, shares the pages
    assert images.data_ptr() == mapped.ctypes.data
    batch = next(iter(BatchLoader(images, None, batch_size=5, shuffle=False)))
    assert batch.shape == (5, 3, 4, 4) and batch[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(*_data(), batch_size=0)


@pytest.mark.parametrize("n, world_size, batch_size", [(50, 2, 8), (49, 2, 8), (33, 2, 16), (10, 3, 3), (7, 4, 5)])
def test_eval_shards_step_together_and_cover_the_epoch_once(n, world_size, batch_size):
    """Every rank makes the same number of steps; the spare samples join last batches, none repeats."""
    images, labels = _data(n)
    loaders = [
        BatchLoader(images, labels, batch_size=batch_size, shuffle=True, seed=3, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    assert len({len(loader) for loader in loaders}) == 1
    shards = [[y.tolist() for _, y in loader] for loader in loaders]
    assert all(len(batches) == len(loaders[0]) for batches in shards)
    seen = [v for batches in shards for batch in batches for v in batch]
    assert sorted(seen) == list(range(n))


def test_training_shards_are_equal_and_disjoint():
    images, labels = _data(53)
    loaders = [
        BatchLoader(images, labels, batch_size=4, shuffle=True, drop_last=True, rank=r, world_size=3) for r in range(3)
    ]
    shards = [_epoch_labels(loader) for loader in loaders]
    assert [len(s) for s in shards] == [16, 16, 16] and len(set().union(*shards)) == 48


def test_a_shard_smaller_than_a_batch_still_trains():
    images, labels = _data(6)
    loader = BatchLoader(images, labels, batch_size=16, shuffle=True, drop_last=True)
    assert len(loader) == 1 and sorted(_epoch_labels(loader)) == list(range(6))


def test_same_seed_same_order_on_separate_loaders_other_seed_differs():
    images, labels = _data()
    order = [_epoch_labels(BatchLoader(images, labels, batch_size=7, shuffle=True, seed=s)) for s in (4, 4, 5)]
    assert order[0] == order[1] and order[0] != order[2]


def test_fewer_images_than_processes_is_an_error():
    with pytest.raises(ValueError, match="3 images cannot be shared by 4 processes"):
        BatchLoader(*_data(3), batch_size=2, world_size=4, rank=0)
    with pytest.raises(ValueError, match="rank"):
        BatchLoader(*_data(8), batch_size=2, world_size=2, rank=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked memory needs CUDA")
def test_pinned_batches():
    images, labels = _data()
    x, y = next(iter(BatchLoader(images, labels, batch_size=8, shuffle=True, pin_memory=True)))
    assert x.is_pinned() and y.is_pinned() and torch.equal(x[:, 0, 0, 0].long(), y)


def test_an_explicit_epoch_picks_that_epochs_permutation():
    images, labels = _data()
    epoch = [3]
    loader = BatchLoader(images, labels, batch_size=50, shuffle=True, seed=2, epoch=lambda: epoch[0])
    current = _epoch_labels(loader)
    assert loader.indices(3).tolist() == current and [int(v) for _, y in loader.iterate(3) for v in y] == current
    other = torch.randperm(50, generator=torch.Generator().manual_seed(2 + 7)).tolist()
    assert loader.indices(7).tolist() == other != current


def _unlabeled(n: int, batch_size: int, epoch, seed: int = 100, **kwargs) -> BatchLoader:
    # Each image holds its index in every pixel (n <= 256), so a batch tells which images it holds.
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    return BatchLoader(
        images, None, batch_size=batch_size, shuffle=True, drop_last=True, seed=seed, epoch=epoch, **kwargs
    )


def _ids(batch: torch.Tensor) -> list[int]:
    return batch[:, 0, 0, 0].tolist()


def test_two_streams_yield_two_stream_batches_one_epoch_long():
    images, labels = _data(40)
    epoch = [0]
    labeled = BatchLoader(images, labels, batch_size=8, shuffle=True, drop_last=True, epoch=lambda: epoch[0])
    loader = TwoStreamLoader(labeled, _unlabeled(100, 4, lambda: epoch[0]))
    batches = list(loader)
    assert len(loader) == len(labeled) == len(batches) == 5
    for batch, (x, y) in zip(batches, labeled):
        assert isinstance(batch, TwoStreamBatch)
        assert torch.equal(batch.labeled[0], x) and torch.equal(batch.labeled[1], y)  # the labeled stream as is
        assert batch.unlabeled.shape == (4, 3, 2, 2) and batch.unlabeled.dtype == torch.uint8


def test_a_longer_unlabeled_stream_is_cut_and_restarts_each_epoch_in_its_permutation():
    images, labels = _data(16)
    epoch = [0]
    labeled = BatchLoader(images, labels, batch_size=8, shuffle=True, drop_last=True, epoch=lambda: epoch[0])
    unlabeled = _unlabeled(40, 4, lambda: epoch[0])  # 10 batches, 2 are used per epoch
    loader = TwoStreamLoader(labeled, unlabeled)
    assert loader.passes() == 1
    first = [_ids(b.unlabeled) for b in loader]
    # The first two batches of the unlabeled permutation seed + epoch (each batch sorted for memmap reads).
    order = torch.randperm(40, generator=torch.Generator().manual_seed(100)).tolist()
    assert first == [sorted(order[:4]), sorted(order[4:8])]
    epoch[0] = 1
    order = torch.randperm(40, generator=torch.Generator().manual_seed(101)).tolist()
    assert [_ids(b.unlabeled) for b in loader] == [sorted(order[:4]), sorted(order[4:8])]


def test_a_shorter_unlabeled_stream_is_cycled_in_a_fresh_order_every_pass():
    images, labels = _data(48)
    epoch = [0]
    labeled = BatchLoader(images, labels, batch_size=4, shuffle=True, drop_last=True, epoch=lambda: epoch[0])
    unlabeled = _unlabeled(10, 4, lambda: epoch[0])  # 2 full batches (8 images) per pass; 12 labeled batches
    loader = TwoStreamLoader(labeled, unlabeled)
    assert len(loader) == 12 and loader.passes() == 6
    seen = {}
    for e in (0, 1):
        epoch[0] = e
        ids = [_ids(b.unlabeled) for b in loader]
        assert len(ids) == 12
        passes = [ids[i : i + 2] for i in range(0, 12, 2)]
        for p, batches in enumerate(passes):
            # Pass p of epoch e is the unlabeled loader's permutation e * K + p, K = 6 passes per epoch.
            order = torch.randperm(10, generator=torch.Generator().manual_seed(100 + e * 6 + p)).tolist()
            assert batches == [sorted(order[:4]), sorted(order[4:8])]
            assert len(set(batches[0] + batches[1])) == 8  # within one pass no image comes twice
        seen[e] = passes
    everything = [tuple(map(tuple, p)) for e in (0, 1) for p in seen[e]]
    assert all(a != b for a, b in zip(everything, everything[1:]))  # never the same order twice in a row
    assert len(set(everything)) == 12


def test_two_streams_shard_both_by_rank():
    images, labels = _data(32)
    loaders = [
        TwoStreamLoader(
            BatchLoader(images, labels, batch_size=4, shuffle=True, drop_last=True, rank=r, world_size=2),
            _unlabeled(12, 2, lambda: 0, rank=r, world_size=2),
        )
        for r in range(2)
    ]
    assert [len(loader) for loader in loaders] == [4, 4]
    # 6 unlabeled images per rank: 3 batches of 2 a pass, so the 4th batch starts the second pass.
    ids = [[_ids(b.unlabeled) for b in loader] for loader in loaders]
    for passes in ([0, 1, 2], [3]):  # within a pass the ranks share no image, as with one permutation
        shards = [{i for k in passes for i in ids[r][k]} for r in range(2)]
        assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 2 * len(passes)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(101)).tolist()  # pass 1: permutation 0 * 2 + 1
    assert [ids[0][3], ids[1][3]] == [sorted(order[0:4:2]), sorted(order[1:4:2])]


def test_two_streams_need_one_labeled_and_one_unlabeled_loader():
    images, labels = _data(8)
    with pytest.raises(ValueError, match="labeled BatchLoader"):
        TwoStreamLoader(BatchLoader(images, None, batch_size=2), BatchLoader(images, None, batch_size=2))
    with pytest.raises(ValueError, match="labels=None"):
        TwoStreamLoader(BatchLoader(images, labels, batch_size=2), BatchLoader(images, labels, batch_size=2))


def test_a_restored_loader_goes_on_with_the_batches_the_interrupted_pass_had_not_handed_out():
    images, labels = _data(50)
    epoch = [3]
    straight = BatchLoader(images, labels, batch_size=8, shuffle=True, drop_last=True, seed=1, epoch=lambda: epoch[0])
    whole = [y.tolist() for _, y in straight]
    interrupted = iter(
        BatchLoader(images, labels, batch_size=8, shuffle=True, drop_last=True, seed=1, epoch=lambda: epoch[0])
    )
    next(interrupted), next(interrupted)
    resumed_at = []
    restored = BatchLoader(
        images,
        labels,
        batch_size=8,
        shuffle=True,
        drop_last=True,
        seed=1,
        epoch=lambda: epoch[0],
        on_resume=lambda e, b: resumed_at.append((e, b)),
    )
    restored.load_state_dict(straight_state := {"epoch": 3, "batches": 2})
    assert [y.tolist() for _, y in restored] == whole[2:] and resumed_at == [(3, 2)]
    assert restored.state_dict() == {"epoch": 3, "batches": len(whole)}
    # A position saved at the end of an epoch skips nothing of the next one.
    restored.load_state_dict({**straight_state, "batches": len(whole)})
    epoch[0] = 4
    assert [y.tolist() for _, y in restored] == [y.tolist() for _, y in straight]


def test_a_restored_two_stream_loader_pairs_the_unlabeled_batches_of_the_interrupted_pass():
    images, labels = _data(40)
    unlabeled = torch.arange(12, dtype=torch.uint8).view(12, 1, 1, 1).expand(12, 3, 2, 2).contiguous()

    def loader() -> TwoStreamLoader:
        return TwoStreamLoader(
            BatchLoader(images, labels, batch_size=4, shuffle=True, drop_last=True, seed=2),
            BatchLoader(unlabeled, None, batch_size=4, shuffle=True, drop_last=True, seed=9),
        )

    whole = [(b.labeled[1].tolist(), b.unlabeled[:, 0, 0, 0].tolist()) for b in loader()]
    restored = loader()
    restored.load_state_dict({"epoch": 0, "batches": 7})  # past two whole unlabeled passes of 3 batches
    assert [(b.labeled[1].tolist(), b.unlabeled[:, 0, 0, 0].tolist()) for b in restored] == whole[7:]


@pytest.mark.parametrize("labeled", [True, False])
def test_a_prefetching_loader_hands_out_the_same_batches_and_counts_only_those_handed_out(labeled):
    images, labels = _data(50)
    rows = torch.randperm(50, generator=torch.Generator().manual_seed(0))[:40]
    options = dict(batch_size=8, shuffle=True, drop_last=True, seed=2, rows=rows)
    plain = BatchLoader(images, labels[rows] if labeled else None, **options)
    ahead = BatchLoader(images, labels[rows] if labeled else None, prefetch=True, **options)
    expected = [b if labeled else (b,) for b in plain]
    handed_out = ahead.iterate()
    first = next(handed_out)
    # The second batch is being read already, yet the position (what a checkpoint saves) counts one.
    assert ahead.state_dict() == {"epoch": 0, "batches": 1}
    got = [first if labeled else (first,), *[b if labeled else (b,) for b in handed_out]]
    assert len(got) == len(expected) == 5
    for mine, theirs in zip(got, expected):
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs))
    assert ahead.state_dict() == {"epoch": 0, "batches": 5}
    # Restored mid-epoch it goes on from the same batch as the plain loader.
    ahead.load_state_dict({"epoch": 0, "batches": 3})
    rest = [b if labeled else (b,) for b in ahead]
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(rest[0], expected[3]))
    assert ahead.prefetch and not plain.prefetch
