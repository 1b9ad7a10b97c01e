"""Progress bars stay out of logs: off when stdout is not a terminal."""
from mmdiff_2ndm.studies.digits.progress import progress, say


def test_bars_are_silent_off_a_terminal_and_messages_are_plain_lines(capsys):
    assert list(progress(range(3), desc='sampling')) == [0, 1, 2]
    with progress(total=4, desc='sampling') as bar:
        bar.update(4)
    say('[study] a line')
    out = capsys.readouterr()
    assert out.out == '[study] a line\n' and out.err == ''
