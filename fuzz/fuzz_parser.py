"""Coverage-guided fuzzing of the compiled SSE parser with atheris (as h11 keeps one).

Not run in CI: a fuzzer runs until stopped.  Each input is a byte stream plus
the places to cut it into chunks; the harness checks that

* ``EventParser`` never raises on any bytes,
* feeding the stream in chunks gives the same events, ``last_event_id``,
  ``retry`` and comment count as feeding it whole,
* the result equals that of the pure-Python reference parser in
  ``tests/test_parser.py`` (a line-by-line transcription of the spec),
* every event re-framed with ``encode_event`` parses back to itself (for the
  events framing can express: no CR/LF/NUL in the type, no NUL in the id).

Run (atheris has wheels for CPython on x86_64 Linux)::

    pip install atheris
    python fuzz/fuzz_parser.py -max_len=4096 -runs=2000000      # or no -runs: until Ctrl-C
    python fuzz/fuzz_parser.py crash-<hash>                      # replay a finding

Extra arguments go to libFuzzer (``-help=1`` lists them); a seed corpus folder
may be given as a positional argument.  The compiled extension is not
instrumented for coverage; the reference parser is, so its branches (BOM, line
ends, fields, retry digits) are what steer the search.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

with atheris.instrument_imports():
    from sse_fast._core import EventParser, ServerSentEvent, encode_event
    from test_parser import reference_parse


def parse(chunks: list[bytes]) -> tuple[list[ServerSentEvent], str, int | None, int]:
    parser = EventParser()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events, parser.last_event_id, parser.retry, parser.comments


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cuts = sorted(fdp.ConsumeIntListInRange(fdp.ConsumeIntInRange(0, 8), 0, 4096))
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    chunks, start = [], 0
    for cut in cuts:
        cut = min(cut, len(stream))
        chunks.append(stream[start:cut])
        start = max(start, cut)
    chunks.append(stream[start:])

    whole = parse([stream])
    split = parse(chunks)
    if whole != split:
        raise AssertionError(f"chunking changed the result: {chunks!r}\nwhole {whole!r}\nsplit {split!r}")
    ref = reference_parse(stream)
    if whole != (ref.events, ref.last_event_id, ref.retry, ref.comments):
        raise AssertionError(f"differs from the reference parser on {stream!r}:\n{whole!r}\n{ref!r}")

    for ev in whole[0]:
        if any(c in ev.event for c in "\r\n\0") or "\0" in ev.id:
            continue
        again = EventParser().feed(encode_event(ev.data, ev.event, ev.id, ev.retry))
        if again != [ev]:  # parsed data holds no CR, so framing keeps it as it is
            raise AssertionError(f"re-framing {ev!r} parsed back as {again!r}")


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
