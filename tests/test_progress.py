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
