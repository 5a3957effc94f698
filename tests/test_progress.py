"""Progress of long steps: a bar that says what is done, how far, how fast; nothing for short steps."""

from zoo_lightning.progress import SHOWN_FROM, progress, progress_line, tracked


def test_a_long_step_shows_what_it_does_how_far_and_how_fast(capsys):
    assert list(tracked(range(SHOWN_FROM), "Decoding my_photos", SHOWN_FROM)) == list(range(SHOWN_FROM))
    err = capsys.readouterr().err
    assert "Decoding my_photos" in err and f"{SHOWN_FROM}/{SHOWN_FROM}" in err and "images/s" in err


def test_a_short_step_shows_nothing(capsys):
    with progress("Reading the runs' event files", 9, unit="runs", shown_from=10) as advance:
        advance(9)
    assert capsys.readouterr().err == ""
    with progress("Reading the runs' event files", 10, unit="runs", shown_from=10) as advance:
        advance(10)
    assert "10/10" in capsys.readouterr().err


def test_where_stderr_is_a_log_file_the_progress_is_written_as_lines(capsys):
    # capsys's stderr is no terminal, as under nohup or a scheduler: a bar cannot redraw there.
    with progress("Decoding my_photos", 4000, logged_every_s=0) as advance:
        for _ in range(4):
            advance(1000)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("Decoding my_photos: 1000/4000 images (25%), ") and lines[0].endswith(" s left")
    assert lines[-1].startswith("Decoding my_photos: 4000/4000 images (100%), ") and lines[-1].endswith(" s in all")
    with progress("Decoding my_photos", 4000, logged_every_s=3600) as advance:
        for _ in range(4):
            advance(1000)
    (only,) = capsys.readouterr().err.splitlines()  # none before the hour is up: the line at the end alone
    assert "4000/4000 images (100%)" in only


def test_a_line_says_the_rate_and_time_left_of_the_items_timed():
    # 20 of 25 batches done, 5 of them in the 10 s since a resume: 0.5 batches/s, 5 left, 10 s
    line = progress_line("Epoch 3 of 8", 20, 25, "batches", 10.0, timed=5)
    assert line == "Epoch 3 of 8: 20/25 batches (80%), 0.50 batches/s, about 10 s left"
    done = progress_line("Decoding", 3000, 3000, "images", 2.0)
    assert done == "Decoding: 3000/3000 images (100%), 1,500 images/s, 2 s in all"
    endless = progress_line("Predicting", 7, float("inf"), "batches", 2.0)  # a loader without a length
    assert endless == "Predicting: 7 batches, 3.50 batches/s, 2 s so far"
