"""sweep: the grid parsed into combinations and the version names runs get."""

import pytest

from zoo_lightning.commands.sweep import combinations, parse_grid, run_name


def test_grid_parses_keys_and_values():
    grid = parse_grid(["model.optimizer.init_args.lr=0.1,0.05", "--data.init_args.batch_size=128,256"])
    assert grid == {"model.optimizer.init_args.lr": ["0.1", "0.05"], "data.init_args.batch_size": ["128", "256"]}


def test_two_by_two_grid_gives_four_distinct_runs():
    combos = combinations(parse_grid(["a.lr=0.1,0.05", "b.batch_size=128,256"]))
    assert len(combos) == 4
    names = {run_name(c) for c in combos}
    assert len(names) == 4
    assert "lr=0.1,batch_size=128" in names


def test_keys_sharing_a_last_part_keep_their_full_path():
    assert run_name({"model.lr": "1", "other.lr": "2"}) == "model.lr=1,other.lr=2"


@pytest.mark.parametrize("items", [["lr"], ["=1,2"], ["lr="], ["a=1", "a=2"], []])
def test_bad_grid_items_are_refused(items):
    with pytest.raises(ValueError):
        parse_grid(items)
