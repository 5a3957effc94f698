"""Progress of long steps: a bar that says what is done, how far, how fast; nothing for short steps."""

from zoo_lightning.progress import SHOWN_FROM, progress, tracked


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
